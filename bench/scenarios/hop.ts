/**
 * `hop`: the floor under every relay step. This process uploads one payload of N MB in a single
 * unary call to a child gRPC server (bench/hop-server.ts, our server settings), with TLS and in
 * plaintext, several times. No protobuf, no state, no auth: what one process-to-process
 * transfer costs on this machine, and how much CPU each end spends on it. A relay of 100 MB to
 * 2 nodes and back makes 8 such transfers through the SuperLink (4 in, 4 out).
 */
import * as grpc from "@grpc/grpc-js";
import { readFileSync } from "node:fs";
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
  calls: number,
): Promise<HopResult> {
  const script = join(__dirname, "..", "hop-server.js");
  const args = security === "tls" ? ["--tls", creds.caCert, creds.serverCert, creds.serverKey] : [];
  const server: Child = startNodeScript(`hop-server-${security}`, script, { args, logDir: workDir });
  const client = grpc.makeGenericClientConstructor({ upload: HOP_METHOD }, "Hop");
  let stub: grpc.Client | undefined;
  try {
    const ready = await server.waitForLog("hop server ready", (r) => r["event"] === "hop-server.ready");
    const credentials =
      security === "tls" ? grpc.credentials.createSsl(readFileSync(creds.caCert)) : grpc.credentials.createInsecure();
    // Both ends extended, as the daemons are.
    enableGrpcExtensions();
    stub = createClient(client, `localhost:${String(ready["port"])}`, credentials);
    const payload = Buffer.alloc(payloadMB * 1_000_000, 1);
    const times: number[] = [];
    const senderCpu: number[] = [];
    const receiverUser: number[] = [];
    const receiverSystem: number[] = [];
    for (let i = 0; i < calls; i++) {
      const cpuBefore = process.cpuUsage();
      const started = performance.now();
      const reply = await new Promise<Buffer>((resolve, reject) => {
        (stub as unknown as { upload: (b: Buffer, cb: (e: Error | null, r: Buffer) => void) => void }).upload(
          payload,
          (err, r) => (err ? reject(err) : resolve(r)),
        );
      });
      times.push((performance.now() - started) / 1000);
      const cpu = process.cpuUsage(cpuBefore);
      senderCpu.push((cpu.user + cpu.system) / 1000);
      const r = JSON.parse(reply.toString("utf8")) as { bytes: number; userMs: number; systemMs: number };
      if (r.bytes !== payload.length) throw new Error(`hop: the server got ${r.bytes} bytes, sent ${payload.length}`);
      receiverUser.push(r.userMs);
      receiverSystem.push(r.systemMs);
    }
    const warm = <T>(xs: T[]): T[] => (xs.length > 1 ? xs.slice(1) : xs);
    return {
      payloadMB,
      security,
      calls,
      firstSeconds: times[0]!,
      seconds: summary(warm(times)),
      senderCpuMs: summary(warm(senderCpu)),
      receiverUserMs: summary(warm(receiverUser)),
      receiverSystemMs: summary(warm(receiverSystem)),
    };
  } finally {
    stub?.close();
    await stopChildren([server]);
  }
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
    say(`hop ${payloadMB} MB, ${security}: ${calls} uploads`);
    results.push(await runHopCase(creds, workDir, payloadMB, security, calls));
  }
  return results;
}
