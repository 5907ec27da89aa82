/**
 * The RestPoster for Node: node:http / node:https with keep-alive connections of its own.
 * node:https takes the SuperLink's CA bundle (global fetch cannot take a custom CA); without
 * one, the system's trusted CAs are used.
 */
import * as http from "node:http";
import * as https from "node:https";
import { errorMessage } from "../core/errors";
import { CallStatus, FleetCallError } from "./fleet-transport";
import type { ClosableRestPoster, RestResponse } from "./rest-connection";

export interface NodeRestPosterOptions {
  /** CA bundle (PEM) that signed the SuperLink's certificate; default: system roots. */
  rootCertificates?: Buffer;
  /** Test-only: the host name the certificate must name, when dialling an IP address. */
  servername?: string;
}

/** Creates a poster; `close()` destroys its idle and active sockets. */
export function createNodeRestPoster(options: NodeRestPosterOptions = {}): ClosableRestPoster {
  const httpAgent = new http.Agent({ keepAlive: true });
  const httpsAgent = new https.Agent({
    keepAlive: true,
    ...(options.rootCertificates !== undefined ? { ca: options.rootCertificates } : {}),
    ...(options.servername !== undefined ? { servername: options.servername } : {}),
  });
  const post = (
    url: string,
    body: Uint8Array,
    headers: Record<string, string>,
    control: { signal?: AbortSignal; deadlineMs?: number },
  ): Promise<RestResponse> =>
    new Promise<RestResponse>((resolve, reject) => {
      const target = new URL(url);
      const secure = target.protocol === "https:";
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        control.signal?.removeEventListener("abort", onAbort);
        fn();
      };
      const fail = (code: number, details: string, cause?: unknown): void => {
        finish(() => reject(new FleetCallError(code, details, undefined, { cause })));
        req.destroy();
      };
      const request = secure ? https.request : http.request;
      const req = request(target, {
        method: "POST",
        agent: secure ? httpsAgent : httpAgent,
        headers: { ...headers, "content-length": String(body.byteLength) },
      });
      const onAbort = (): void => fail(CallStatus.CANCELLED, "Call cancelled");
      control.signal?.addEventListener("abort", onAbort, { once: true });
      if (control.deadlineMs !== undefined) {
        timer = setTimeout(
          () => fail(CallStatus.DEADLINE_EXCEEDED, "Deadline exceeded"),
          Math.max(0, control.deadlineMs),
        );
      }
      req.on("error", (err: NodeJS.ErrnoException) => {
        // Keep the TLS / socket error text: src/transport/retry.ts recognises certificate and plaintext-peer failures in it.
        const code = err.code ? `${err.code}: ` : "";
        fail(CallStatus.UNAVAILABLE, `${code}${errorMessage(err)}`, err);
      });
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", (err) => fail(CallStatus.UNAVAILABLE, `Reading the answer failed: ${errorMessage(err)}`, err));
        res.on("end", () => {
          const payload = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
          finish(() =>
            resolve({
              status: res.statusCode ?? 0,
              header: (name) => {
                const v = res.headers[name.toLowerCase()];
                return Array.isArray(v) ? v[0] : v;
              },
              body: payload,
            }),
          );
        });
      });
      if (control.signal?.aborted) {
        onAbort();
        return;
      }
      req.end(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
    });
  return {
    post,
    close() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}
