/**
 * The one place where errors become gRPC statuses (server side) and statuses become typed
 * errors (client side). Details never carry stacks or key material.
 */
import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import {
  AuthenticationError,
  ConnectionError,
  FlwrError,
  InvalidConfigError,
  MalformedMessageError,
  NotFoundError,
  TimeoutError,
  errorMessage,
} from "../core/errors";
import { truncateEcho } from "../core/logger";

/** Called with a fresh incident id for a failure whose details must stay in the server's log. */
export type IncidentReporter = (incidentId: string, err: unknown) => void;

/**
 * A server-side error object that grpc-js turns into a status. Messages are truncated with
 * `truncateEcho`. State failures and unexpected exceptions can carry file paths and internals,
 * and callers of the Driver API are anonymous: they get INTERNAL with only an incident id, which
 * `report` receives with the error, for the log (without `report`: INTERNAL, no id).
 */
export function toServiceError(err: unknown, report?: IncidentReporter): Partial<grpc.StatusObject> {
  if (FlwrError.isFlwrError(err)) {
    switch (err.code) {
      case "FLWR_AUTHENTICATION_FAILED":
        return { code: grpc.status.UNAUTHENTICATED, details: "Access denied" };
      case "FLWR_MALFORMED_MESSAGE":
        return { code: grpc.status.INVALID_ARGUMENT, details: truncateEcho(err.message) };
      case "FLWR_NOT_FOUND":
        return { code: grpc.status.NOT_FOUND, details: truncateEcho(err.message) };
      case "FLWR_RESOURCE_EXHAUSTED":
        return { code: grpc.status.RESOURCE_EXHAUSTED, details: truncateEcho(err.message) };
      default:
        break;
    }
  }
  if (report === undefined) return { code: grpc.status.INTERNAL, details: "Internal error" };
  const incidentId = randomBytes(6).toString("hex");
  report(incidentId, err);
  return { code: grpc.status.INTERNAL, details: `Internal error (incident ${incidentId}; details are in the SuperLink's log)` };
}

/** True for a grpc-js client error (it carries a numeric `code`). */
export function isServiceError(err: unknown): err is grpc.ServiceError {
  return typeof err === "object" && err !== null && typeof (err as { code?: unknown }).code === "number" && "details" in err;
}

/** Client side: a typed error for a failed call, keeping the original as `cause`. */
export function fromServiceError(err: unknown, what: string): FlwrError {
  if (!isServiceError(err)) return new ConnectionError(`${what} failed: ${errorMessage(err)}`, { cause: err });
  const details = err.details || grpc.status[err.code] || String(err.code);
  switch (err.code) {
    case grpc.status.UNAUTHENTICATED:
      return new AuthenticationError(`${what} was refused by the SuperLink: ${details}`, { cause: err });
    case grpc.status.INVALID_ARGUMENT:
      return new MalformedMessageError(`${what} was rejected: ${details}`, { cause: err });
    case grpc.status.NOT_FOUND:
      return new NotFoundError(`${what}: ${details}`, { cause: err });
    case grpc.status.DEADLINE_EXCEEDED:
      return new TimeoutError(`${what} timed out: ${details}`, { cause: err });
    default:
      return new ConnectionError(`${what} failed (${grpc.status[err.code] ?? err.code}): ${details}`, { cause: err });
  }
}

/** Node's TLS verification failures, as grpc-js reports them in UNAVAILABLE details. */
const CERTIFICATE_FAILURE =
  /certificate|altnames|CERT_|unable to verify|unable to get (local )?issuer|self[- ]signed|ERR_TLS_CERT/i;

/** OpenSSL's complaint when the peer answers a TLS handshake with plaintext (an --insecure server). */
const PLAINTEXT_PEER = /wrong version number/i;

/** True when a failed call is a TLS certificate verification failure. */
export function isCertificateFailure(err: unknown): boolean {
  return isServiceError(err) && err.code === grpc.status.UNAVAILABLE && CERTIFICATE_FAILURE.test(err.details ?? "");
}

/** grpc-js appends an empty "Resolution note: " to connection errors; it only adds noise. */
export function withoutResolutionNote(text: string): string {
  return text.replace(/\.?\s*Resolution note:\s*$/, "");
}

/** grpc-js details without its resolution note and OpenSSL source locations. */
export function cleanDetails(details: string | undefined): string {
  return withoutResolutionNote(details ?? "")
    .replace(/:\.\.\/deps\/openssl\/[^\s]*:\d+:\s*$/, "")
    .trim();
}

/**
 * A failed call that retrying cannot fix because TLS is set up wrong on this side: the
 * certificate is not vouched for by the given CA (or names another host), or the peer speaks
 * plaintext. `peer` names what was dialled ("the SuperLink at HOST:PORT"), `insecureHint`
 * says which side to restart with --insecure. Undefined for any other failure.
 */
export function tlsSetupError(err: unknown, peer: string, insecureHint: string): InvalidConfigError | undefined {
  if (!isServiceError(err) || err.code !== grpc.status.UNAVAILABLE) return undefined;
  const details = cleanDetails(err.details) || "UNAVAILABLE";
  if (PLAINTEXT_PEER.test(details)) {
    return new InvalidConfigError(
      `${capitalize(peer)} does not speak TLS (${details}): it probably runs with --insecure. ` +
        `Start it with certificates, or ${insecureHint}.`,
      { cause: err },
    );
  }
  if (isCertificateFailure(err)) {
    return new InvalidConfigError(
      `TLS certificate verification of ${peer} failed (${details}). ` +
        "Pass the CA certificate that signed the SuperLink's certificate with --root-certificates, " +
        "and connect with a host name or IP address that the certificate names.",
      { cause: err },
    );
  }
  return undefined;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
