/**
 * `handshake`: the floor under an authenticated registration, as `hop` is the floor under a relay
 * step. This process opens N fresh TLS connections (20 at a time, one shared TLS context, as one
 * process of SuperNodes does) to a bare node:http2 server in a child process (bench/hop-server.ts
 * `--node-http2`: no grpc-js, none of our code), and on each makes two small POSTs, the sizes of
 * CreateNode and the first PullTaskIns, with the one P-384 ECDH between them that Flower's key
 * recipe costs each SuperNode. No gRPC framing, no auth headers or MACs, no state, no logging:
 * what Node's own TLS and HTTP/2 charge both ends for a registration on this machine, and so the
 * most registrations per second its cores could take with SuperLink and SuperNodes on them.
 */
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import * as http2 from "node:http2";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { createSecureContext } from "node:tls";
import type { Credentials } from "../lib/deployment";
import { type Child, say, stopChildren, startNodeScript } from "../lib/processes";
import { type Summary, summarize } from "../lib/stats";
import { type HopReply, postToNodeHttp2Hop } from "./hop";

export interface HandshakeResult {
  connections: number;
  /** Connections per second, both ends on this machine's cores. */
  perSecond: number;
  /** CPU per connection of this process (the SuperNodes' side), ms. */
  clientCpuMs: number;
  /** CPU per connection of the server process (the SuperLink's side), ms. */
  serverCpuMs: number;
  /** 1000 x cores / (client + server ms): the ceiling with both ends busy on every core. */
  ceilingPerSecond: number;
}

export interface HandshakeRuns {
  runs: HandshakeResult[];
  summary: Record<"perSecond" | "clientCpuMs" | "serverCpuMs" | "ceilingPerSecond", Summary>;
}

/** Runs by default (a fresh server each). */
export const DEFAULT_HANDSHAKE_REPEAT = 5;
/** Connections per run, and warm-up connections before them. */
const CONNECTIONS = 300;
const WARM_UP = 20;
const IN_FLIGHT = 20;
/** Request bodies about the size of our CreateNode and first PullTaskIns with their gRPC frames. */
const CREATE_NODE_BYTES = 16;
const PULL_BYTES = 40;

/** P-384 private keys, one per connection: PEM round trip (Node 20 KeyObjects straight from the job can deadlock on export). */
function p384PrivateKeys(n: number): KeyObject[] {
  return Array.from({ length: n }, () => {
    const pair = generateKeyPairSync("ec", {
      namedCurve: "secp384r1",
      privateKeyEncoding: { type: "pkcs8", format: "pem" },
      publicKeyEncoding: { type: "spki", format: "pem" },
    });
    return createPrivateKey(pair.privateKey);
  });
}

async function runOnce(creds: Credentials, workDir: string, run: number): Promise<HandshakeResult> {
  const script = join(__dirname, "..", "hop-server.js");
  const server: Child = startNodeScript(`handshake-server-${run}`, script, {
    args: ["--node-http2", "--tls", creds.caCert, creds.serverCert, creds.serverKey],
    logDir: workDir,
  });
  const sessions: http2.ClientHttp2Session[] = [];
  try {
    const ready = await server.waitForLog("hop server ready", (r) => r["event"] === "hop-server.ready");
    const url = `https://localhost:${String(ready["port"])}`;
    const secureContext = createSecureContext({ ca: readFileSync(creds.caCert) });
    const keys = p384PrivateKeys(CONNECTIONS + WARM_UP);
    const superlinkKey = createPublicKey(p384PrivateKeys(1)[0]!);
    const post = (session: http2.ClientHttp2Session, bytes: number): Promise<HopReply> =>
      postToNodeHttp2Hop(session, "/register", Buffer.alloc(bytes));
    let serverMs = 0;
    const register = async (key: KeyObject): Promise<void> => {
      const session = http2.connect(url, { secureContext });
      sessions.push(session);
      const failed = new Promise<never>((_, reject) => session.once("error", reject));
      // An error after the steps (the session is kept open) is nobody's to handle.
      failed.catch(() => undefined);
      const steps = async (): Promise<void> => {
        const created = await post(session, CREATE_NODE_BYTES);
        diffieHellman({ privateKey: key, publicKey: superlinkKey });
        const pulled = await post(session, PULL_BYTES);
        serverMs += created.userMs + created.systemMs + pulled.userMs + pulled.systemMs;
      };
      await Promise.race([steps(), failed]);
    };
    for (const key of keys.slice(CONNECTIONS)) await register(key);
    serverMs = 0;
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (next < CONNECTIONS) await register(keys[next++]!);
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpuBefore);
    const clientCpuMs = (cpu.user + cpu.system) / 1000 / CONNECTIONS;
    const serverCpuMs = serverMs / CONNECTIONS;
    return {
      connections: CONNECTIONS,
      perSecond: CONNECTIONS / seconds,
      clientCpuMs,
      serverCpuMs,
      ceilingPerSecond: (1000 * availableParallelism()) / (clientCpuMs + serverCpuMs),
    };
  } finally {
    for (const session of sessions) session.destroy();
    await stopChildren([server]);
  }
}

export async function runHandshake(creds: Credentials, workDir: string, times: number): Promise<HandshakeRuns> {
  const runs: HandshakeResult[] = [];
  for (let i = 0; i < times; i++) {
    say(`handshake: run ${i + 1} of ${times}, ${CONNECTIONS} connections`);
    runs.push(await runOnce(creds, workDir, i + 1));
  }
  const of = (pick: (r: HandshakeResult) => number): Summary => {
    const s = summarize(runs.map(pick));
    if (s === undefined) throw new Error("handshake: no runs");
    return s;
  };
  return {
    runs,
    summary: {
      perSecond: of((r) => r.perSecond),
      clientCpuMs: of((r) => r.clientCpuMs),
      serverCpuMs: of((r) => r.serverCpuMs),
      ceilingPerSecond: of((r) => r.ceilingPerSecond),
    },
  };
}
