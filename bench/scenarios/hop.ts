/**
 * `hop`: the floor under every relay step. This process uploads one payload of N MB in a single
 * unary call to a child gRPC server (bench/hop-server.ts, our server settings), with TLS and in
 * plaintext, several times. No protobuf, no state, no auth: what one process-to-process
 * transfer costs on this machine, and how much CPU each end spends on it. A relay of 100 MB to
 * 2 nodes and back makes 8 such transfers through the SuperLink (4 in, 4 out).
 * Each case also runs on bare node:http2 (one POST, no grpc-js, none of our code): the floor
 * that Node's own HTTP/2 and TLS put under our stack.
 */
import * as grpc from "@grpc/grpc-js";
import { readFileSync } from "node:fs";
import * as http2 from "node:http2";
import { join } from "node:path";
import { createClient } from "../../src/transport/channel";
import { enableGrpcExtensions } from "../../src/transport/grpc-extensions";
import { HOP_METHOD } from "../lib/hop-method";
import type { Credentials } from "../lib/deployment";
import { type Child, say, stopChildren, startNodeScript } from "../lib/processes";
import { type Summary, summarize } from "../lib/stats";

export interface HopResult {
  payloadMB: number;
  security: "tls" | "plaintext";
  /** "grpc-js": our stack, as the daemons run it; "node:http2": bare Node HTTP/2, no gRPC. */
  stack: HopStack;
  /** Calls made; the first one (connection and memory warm-up) is not in the summaries. */
  calls: number;
  seconds: Summary;
  firstSeconds: number;
  /** CPU of the sending process per call (user + system), ms. */
  senderCpuMs: Summary;
  /** CPU of the receiving process per call, user and system, ms. */
  receiverUserMs: Summary;
  receiverSystemMs: Summary;
}

type HopStack = "grpc-js" | "node:http2";

/** What one upload reports: the receiver's byte count and CPU since its previous call. */
export interface HopReply {
  bytes: number;
  userMs: number;
  systemMs: number;
}

/** Uploads one payload, resolves with the receiver's reply. */
type Upload = (payload: Buffer) => Promise<HopReply>;

/** Timed calls by default, after the warm-up call. */
export const DEFAULT_HOP_REPEAT = 10;

const summary = (xs: number[]): Summary => {
  const s = summarize(xs);
  if (s === undefined) throw new Error("hop: no samples");
  return s;
};

async function runHopCase(
  creds: Credentials,
  workDir: string,
  payloadMB: number,
  security: HopResult["security"],
  stack: HopStack,
  calls: number,
): Promise<HopResult> {
  const script = join(__dirname, "..", "hop-server.js");
  const args = [
    ...(stack === "node:http2" ? ["--node-http2"] : []),
    ...(security === "tls" ? ["--tls", creds.caCert, creds.serverCert, creds.serverKey] : []),
  ];
  const name = `hop-server-${security}${stack === "node:http2" ? "-node-http2" : ""}`;
  const server: Child = startNodeScript(name, script, { args, logDir: workDir });
  let close: (() => void) | undefined;
  try {
    const ready = await server.waitForLog("hop server ready", (r) => r["event"] === "hop-server.ready");
    const port = Number(ready["port"]);
    const ca = security === "tls" ? readFileSync(creds.caCert) : undefined;
    const client = stack === "grpc-js" ? grpcUploader(port, ca) : nodeHttp2Uploader(port, ca);
    close = client.close;
    const payload = Buffer.alloc(payloadMB * 1_000_000, 1);
    const times: number[] = [];
    const senderCpu: number[] = [];
    const receiverUser: number[] = [];
    const receiverSystem: number[] = [];
    for (let i = 0; i < calls; i++) {
      const cpuBefore = process.cpuUsage();
      const started = performance.now();
      const r = await client.upload(payload);
      times.push((performance.now() - started) / 1000);
      const cpu = process.cpuUsage(cpuBefore);
      senderCpu.push((cpu.user + cpu.system) / 1000);
      if (r.bytes !== payload.length) throw new Error(`hop: the server got ${r.bytes} bytes, sent ${payload.length}`);
      receiverUser.push(r.userMs);
      receiverSystem.push(r.systemMs);
    }
    const warm = <T>(xs: T[]): T[] => (xs.length > 1 ? xs.slice(1) : xs);
    return {
      payloadMB,
      security,
      stack,
      calls,
      firstSeconds: times[0]!,
      seconds: summary(warm(times)),
      senderCpuMs: summary(warm(senderCpu)),
      receiverUserMs: summary(warm(receiverUser)),
      receiverSystemMs: summary(warm(receiverSystem)),
    };
  } finally {
    close?.();
    await stopChildren([server]);
  }
}

/** Our client, as the daemons run it (extensions on: the payload is sent without a copy). */
function grpcUploader(port: number, ca: Buffer | undefined): { upload: Upload; close: () => void } {
  const credentials = ca !== undefined ? grpc.credentials.createSsl(ca) : grpc.credentials.createInsecure();
  // Both ends extended, as the daemons are.
  enableGrpcExtensions();
  const Client = grpc.makeGenericClientConstructor({ upload: HOP_METHOD }, "Hop");
  const stub = createClient(Client, `localhost:${String(port)}`, credentials) as unknown as grpc.Client & {
    upload: (b: Buffer, cb: (e: Error | null, r: Buffer) => void) => void;
  };
  return {
    upload: (payload) =>
      new Promise((resolve, reject) => {
        stub.upload(payload, (err, r) => (err ? reject(err) : resolve(JSON.parse(r.toString("utf8")) as HopReply)));
      }),
    close: () => stub.close(),
  };
}

/** One POST of `body` to bench/hop-server.ts `--node-http2`; resolves with its JSON reply. */
export function postToNodeHttp2Hop(session: http2.ClientHttp2Session, path: string, body: Buffer): Promise<HopReply> {
  return new Promise((resolve, reject) => {
    const request = session.request({ ":method": "POST", ":path": path, "content-length": body.length });
    const parts: Buffer[] = [];
    request.on("data", (chunk: Buffer) => parts.push(chunk));
    request.on("end", () => {
      try {
        resolve(JSON.parse(Buffer.concat(parts).toString("utf8")) as HopReply);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
    request.on("error", reject);
    request.end(body);
  });
}

/** One POST per upload over one node:http2 session. */
function nodeHttp2Uploader(port: number, ca: Buffer | undefined): { upload: Upload; close: () => void } {
  const session = http2.connect(`${ca !== undefined ? "https" : "http"}://localhost:${String(port)}`, {
    ...(ca !== undefined ? { ca } : {}),
  });
  return {
    upload: (payload) => postToNodeHttp2Hop(session, "/upload", payload),
    close: () => session.close(),
  };
}

/** `times` timed uploads per security setting, after one warm-up upload. */
export async function runHop(
  creds: Credentials,
  workDir: string,
  payloadMB: number,
  times: number,
): Promise<HopResult[]> {
  const calls = times + 1;
  const results: HopResult[] = [];
  for (const security of ["tls", "plaintext"] as const) {
    for (const stack of ["grpc-js", "node:http2"] as const) {
      say(`hop ${payloadMB} MB, ${security}, ${stack}: ${calls} uploads`);
      results.push(await runHopCase(creds, workDir, payloadMB, security, stack, calls));
    }
  }
  return results;
}
