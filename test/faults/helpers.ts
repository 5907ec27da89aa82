/**
 * Shared pieces of the fault tests: spawning the real bin/ daemons (built dist/) with their
 * JSON log lines parsed and awaitable, a tiny ClientApp/ServerApp pair written to a temp dir,
 * argument builders for TLS + node authentication, and cleanup of every child a test started.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Fixtures } from "../helpers/fixtures";
import { REPO_ROOT } from "../helpers/fixtures";
import { requireDist } from "../helpers/dist";

export type LogRecord = Record<string, unknown>;

/** Generous bound for "eventually" waits; the jest timeout of each test is the real limit. */
const WAIT_LIMIT_MS = 90_000;

export interface Proc {
  name: string;
  proc: ChildProcess;
  logs: LogRecord[];
  stdout: string[];
  stderr: string[];
  /** Exit code (null when ended by a signal). */
  exited: Promise<number | null>;
  alive(): boolean;
  /** The first log record (already seen or future) matching `predicate`; rejects if the process exits first. */
  waitFor(predicate: (rec: LogRecord) => boolean, what: string): Promise<LogRecord>;
  /** Like waitFor, for the n-th (1-based) matching record. */
  waitForCount(predicate: (rec: LogRecord) => boolean, n: number, what: string): Promise<LogRecord>;
  /** The whole stderr as text (log lines and anything else). */
  text(): string;
}

const running = new Set<Proc>();

/** Spawns `node bin/<bin> ...args` with stdout and stderr captured. */
export function spawnBin(
  name: string,
  bin: string,
  args: string[],
  cwd: string = REPO_ROOT,
  env: NodeJS.ProcessEnv = process.env,
): Proc {
  const proc = spawn(process.execPath, [join(REPO_ROOT, "bin", bin), ...args], {
    cwd,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: LogRecord[] = [];
  const stdout: string[] = [];
  const stderr: string[] = [];
  const listeners = new Set<() => void>();
  createInterface({ input: proc.stdout }).on("line", (line) => stdout.push(line));
  createInterface({ input: proc.stderr }).on("line", (line) => {
    stderr.push(line);
    try {
      logs.push(JSON.parse(line) as LogRecord);
    } catch {
      return; // a Node warning, not a log line
    }
    for (const l of [...listeners]) l();
  });
  const exited = new Promise<number | null>((resolve) =>
    proc.on("exit", (code) => {
      // Let readline deliver the last lines before anyone looks at them.
      setImmediate(() => {
        for (const l of [...listeners]) l();
        resolve(code);
      });
    }),
  );
  const p: Proc = {
    name,
    proc,
    logs,
    stdout,
    stderr,
    exited,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    waitFor: (predicate, what) => p.waitForCount(predicate, 1, what),
    waitForCount(predicate, n, what) {
      return new Promise((resolve, reject) => {
        let ended = false;
        const timer = setTimeout(
          () => finish(new Error(`${name}: no ${what} within ${WAIT_LIMIT_MS / 1000} s:\n${tail()}`)),
          WAIT_LIMIT_MS,
        );
        const finish = (err?: Error, rec?: LogRecord): void => {
          listeners.delete(check);
          clearTimeout(timer);
          if (err) reject(err);
          else resolve(rec!);
        };
        const check = (): void => {
          const hits = logs.filter(predicate);
          if (hits.length >= n) finish(undefined, hits[n - 1]);
          else if (ended)
            finish(new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}) before ${what}:\n${tail()}`));
        };
        void exited.then(() => {
          ended = true;
          check();
        });
        listeners.add(check);
        check();
      });
    },
    text: () => stderr.join("\n"),
  };
  const tail = (): string => stderr.slice(-30).join("\n");
  running.add(p);
  void exited.then(() => running.delete(p));
  return p;
}

/** SIGKILLs every child still running (for afterEach/afterAll) and waits for them to exit. */
export async function killAll(): Promise<void> {
  const alive = [...running].filter((p) => p.alive());
  for (const p of alive) p.proc.kill("SIGKILL");
  await Promise.all(alive.map((p) => p.exited));
}

/** Sends `signal` and waits for the exit code. */
export async function stop(p: Proc, signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
  if (p.alive()) p.proc.kill(signal);
  return p.exited;
}

export const isEvent =
  (name: string, extra: (rec: LogRecord) => boolean = () => true) =>
  (rec: LogRecord): boolean =>
    rec["event"] === name && extra(rec);

/** Level-60 (fatal) log messages, joined. */
export function fatalText(p: Proc): string {
  return p.logs
    .filter((l) => l["level"] === 60)
    .map((l) => String(l["msg"]))
    .join("\n");
}

/** dist/ must exist (the daemons run the compiled code, as users do); jest's global setup builds it, never a test. */
export function ensureDist(): void {
  requireDist();
}

/**
 * A temp dir with `client.js` and `server.js`:
 * - client `app`: NumPyClient; fit adds 1 to every weight and reports `{node: <partition-id>}`;
 *   with node config `hang=true`, fit never returns (a node stuck in training).
 * - server `app`: FedAvg, 2 rounds, fraction_evaluate 0, waits for 2 nodes; `solo`: the same
 *   with 1 node enough, so a round survives a dead node.
 */
export function writeApps(): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), "flwr-ts-faults-app-"));
  const dist = (m: string): string => JSON.stringify(join(REPO_ROOT, "dist", m, "index.js"));
  writeFileSync(
    join(dir, "client.js"),
    `"use strict";
const { ClientApp, NumPyClient } = require(${dist("client")});
class FaultClient extends NumPyClient {
  constructor(context) { super(); this.config = context.nodeConfig; }
  getParameters() { return [{ dtype: "float32", shape: [2], data: new Float32Array([0, 0]) }]; }
  fit(parameters) {
    if (this.config.hang === true) return new Promise(() => {});
    return [parameters.map((a) => ({ ...a, data: a.data.map((v) => v + 1) })), 1, { node: String(this.config["partition-id"]) }];
  }
}
exports.app = new ClientApp({ clientFn: (context) => new FaultClient(context) });
`,
  );
  writeFileSync(
    join(dir, "server.js"),
    `"use strict";
const { ServerApp, FedAvg } = require(${dist("server")});
const strategy = (min) => new FedAvg({ fractionFit: 1, fractionEvaluate: 0, minFitClients: min, minAvailableClients: min });
exports.app = new ServerApp({ config: { numRounds: 2 }, strategy: strategy(2) });
exports.solo = new ServerApp({ config: { numRounds: 2 }, strategy: strategy(1) });
`,
  );
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** SuperLink flags for TLS (+ node authentication unless `auth` is false) on ephemeral ports. */
export function superlinkArgs(
  fx: Fixtures,
  opts: { auth?: boolean; database?: string; allowlistCsv?: string; driver?: string; fleet?: string } = {},
): string[] {
  const args = [
    "--ssl-ca-certfile",
    fx.caCert,
    "--ssl-certfile",
    fx.serverCert,
    "--ssl-keyfile",
    fx.serverKey,
    "--driver-api-address",
    opts.driver ?? "127.0.0.1:0",
    "--fleet-api-address",
    opts.fleet ?? "127.0.0.1:0",
  ];
  if (opts.database !== undefined) args.push("--database", opts.database);
  if (opts.auth !== false) {
    args.push(
      "--auth-list-public-keys",
      opts.allowlistCsv ?? fx.allowlistCsv,
      "--auth-superlink-private-key",
      fx.superlinkPrivateKey,
      "--auth-superlink-public-key",
      fx.superlinkPublicKey,
    );
  }
  return args;
}

export interface RunningSuperLink {
  proc: Proc;
  driverAddress: string;
  fleetAddress: string;
}

/** Spawns flower-superlink and waits for its `superlink.ready` line. */
export async function startSuperLink(args: string[], name = "superlink"): Promise<RunningSuperLink> {
  const proc = spawnBin(name, "flower-superlink", args);
  const ready = await proc.waitFor(isEvent("superlink.ready"), "readiness line");
  return { proc, driverAddress: String(ready["driverAddress"]), fleetAddress: String(ready["fleetAddress"]) };
}

/**
 * Spawns flower-client-app with key pair `index` (0-based) of the fixtures, running client:app.
 * `pingInterval` (seconds) replaces Flower's 30 s (FLWR_TEST_PING_INTERVAL; the SuperLink needs a
 * --min-ping-interval at most that).
 */
export function spawnSuperNode(
  fx: Fixtures,
  appDir: string,
  fleetAddress: string,
  index: number,
  opts: {
    nodeConfig?: string;
    keys?: { privateKey: string; publicKey: string };
    name?: string;
    pingInterval?: number;
  } = {},
): Proc {
  const keys = opts.keys ?? { privateKey: fx.clientPrivateKeys[index]!, publicKey: fx.clientPublicKeys[index]! };
  return spawnBin(
    opts.name ?? `node-${index + 1}`,
    "flower-client-app",
    [
      "client:app",
      "--dir",
      appDir,
      "--superlink",
      fleetAddress,
      "--root-certificates",
      fx.caCert,
      "--auth-supernode-private-key",
      keys.privateKey,
      "--auth-supernode-public-key",
      keys.publicKey,
      "--node-config",
      opts.nodeConfig ?? `partition-id=${index}`,
    ],
    REPO_ROOT,
    opts.pingInterval === undefined
      ? process.env
      : { ...process.env, FLWR_TEST_PING_INTERVAL: String(opts.pingInterval) },
  );
}

/** Starts a SuperNode and waits until it is registered; returns it with its node id. */
export async function startSuperNode(
  ...args: Parameters<typeof spawnSuperNode>
): Promise<{ node: Proc; nodeId: bigint }> {
  const node = spawnSuperNode(...args);
  const ready = await node.waitFor(isEvent("supernode.ready"), "readiness line");
  return { node, nodeId: BigInt(String(ready["nodeId"])) };
}

/** Spawns flower-server-app running `server:<attr>` from `appDir`. */
export function spawnServerApp(
  fx: Fixtures,
  appDir: string,
  driverAddress: string,
  attr = "app",
  ca = fx.caCert,
): Proc {
  return spawnBin(
    "serverapp",
    "flower-server-app",
    [`server:${attr}`, "--dir", appDir, "--superlink", driverAddress, "--root-certificates", ca],
    appDir,
  );
}

/** The run id a ServerApp created (from its `serverapp.run-created` line). */
export async function runIdOf(serverApp: Proc): Promise<bigint> {
  const rec = await serverApp.waitFor(isEvent("serverapp.run-created"), "run creation");
  return BigInt(String(rec["runId"]));
}

/** How many train replies a SuperNode has sent so far. */
export function trainRepliesSent(node: Proc): number {
  return node.logs.filter(
    (l) => l["event"] === "supernode.reply-sent" && l["messageType"] === "train" && l["error"] === false,
  ).length;
}
