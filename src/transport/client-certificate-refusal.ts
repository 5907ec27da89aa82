/**
 * Telling a refused client certificate apart from an unreachable server, on the client side.
 *
 * A server that requires client certificates (the Driver API with --driver-api-client-ca)
 * refuses in one of two ways. Without a certificate, OpenSSL answers with the TLS alert
 * "certificate required", which grpc-js passes on. With a certificate its CA does not vouch
 * for (self-signed, another CA, expired), Node checks it after the handshake and just closes
 * the socket, so grpc-js only says "Failed to connect" — the same as a flaky network. For that
 * case `probeClientCertificate` makes one TLS handshake of its own: a gRPC server that accepts
 * the connection sends its HTTP/2 SETTINGS at once, one that refuses closes it unanswered.
 */
import * as grpc from "@grpc/grpc-js";
import { isIP } from "node:net";
import { connect } from "node:tls";
import { parseAddress } from "../core/address";
import { InvalidConfigError } from "../core/errors";
import { cleanDetails, isServiceError } from "./status";
import type { ClientCertificate } from "./tls";

/** How long the probe waits for the server's first bytes after the handshake. */
const PROBE_TIMEOUT_MS = 3_000;

/** OpenSSL's alert for a missing client certificate (TLS 1.3 alert 116; TLS 1.2 "handshake failure" is not specific). */
const CERTIFICATE_REQUIRED = /alert certificate required|SSL alert number 116/i;

/** grpc-js's text when a connection ended during setup without a socket error. */
const BARE_CONNECT_FAILURE = /Failed to connect\b/;

export type ProbeResult = "accepted" | "refused" | "unknown";

/**
 * One TLS handshake to `target` (HOST:PORT) presenting `clientCertificate`; the server's
 * certificate is not checked (grpc-js already reported any problem with it). Never rejects.
 */
export function probeClientCertificate(
  target: string,
  clientCertificate: ClientCertificate,
  timeoutMs = PROBE_TIMEOUT_MS,
): Promise<ProbeResult> {
  const { host, port } = parseAddress(target);
  return new Promise<ProbeResult>((resolve) => {
    let settled = false;
    let handshakeDone = false;
    const finish = (result: ProbeResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const socket = connect({
      host,
      port,
      ...(isIP(host) === 0 ? { servername: host } : {}),
      cert: clientCertificate.cert,
      key: clientCertificate.key,
      ALPNProtocols: ["h2"],
      rejectUnauthorized: false,
    });
    const timer = setTimeout(() => finish("unknown"), timeoutMs);
    socket.once("secureConnect", () => {
      handshakeDone = true;
    });
    socket.once("data", () => finish("accepted"));
    // A close before the handshake is a network problem; after it, before any byte, a refusal.
    socket.once("error", () => finish(handshakeDone ? "refused" : "unknown"));
    socket.once("close", () => finish(handshakeDone ? "refused" : "unknown"));
  });
}

/**
 * For a failed first call to a server that may require client certificates: a clear
 * InvalidConfigError (retrying will not help) when the server refused this side's certificate,
 * undefined otherwise. `peer` names what was dialled ("the SuperLink Driver API at HOST:PORT"),
 * `flags` the options that set the certificate ("--ssl-certfile and --ssl-keyfile").
 */
export async function clientCertificateRefusal(
  err: unknown,
  ctx: { target: string; peer: string; flags: string; clientCertificate?: ClientCertificate },
): Promise<InvalidConfigError | undefined> {
  if (!isServiceError(err) || err.code !== grpc.status.UNAVAILABLE) return undefined;
  const details = cleanDetails(err.details);
  if (CERTIFICATE_REQUIRED.test(details)) {
    return new InvalidConfigError(
      `${capitalize(ctx.peer)} requires a client certificate (mutual TLS) and ${
        ctx.clientCertificate === undefined ? "none was given" : "did not accept the one given"
      }: pass ${ctx.flags} with a certificate signed by the CA the SuperLink trusts for ServerApps ` +
        "(its --driver-api-client-ca; scripts/generate.sh writes certificates/serverapp.pem and certificates/serverapp.key).",
      { cause: err },
    );
  }
  if (ctx.clientCertificate === undefined || !BARE_CONNECT_FAILURE.test(details)) return undefined;
  if ((await probeClientCertificate(ctx.target, ctx.clientCertificate)) !== "refused") return undefined;
  return new InvalidConfigError(
    `${capitalize(ctx.peer)} refused the client certificate given with ${ctx.flags}: it closed the connection right after ` +
      "the TLS handshake. The certificate must be signed by the CA given to the SuperLink with --driver-api-client-ca " +
      "(not self-signed, not from another CA), be valid now, and allow client authentication.",
    { cause: err },
  );
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
