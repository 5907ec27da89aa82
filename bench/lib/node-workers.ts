/**
 * Many authenticated SuperNodes run in-process by a few bench worker processes
 * (bench/idle-worker.ts), for the scenarios with hundreds or thousands of nodes (idle,
 * round1000): one process per node would need ~50 MB each.
 */
import { setPriority } from "node:os";
import { join } from "node:path";
import type { Credentials, SuperLinkChild } from "./deployment";
import { type Child, daemonNodeFlagsInUse, failOnExit, startNodeScript } from "./processes";

/** Nodes per worker process: keeps each worker's event loop far from saturation (and 10,000 nodes in 20 processes). */
const NODES_PER_WORKER = 500;
/**
 * Registrations in flight over all workers together. The SuperLink registers one node per
 * ~7-11 ms of its CPU, so more in flight only queues TLS handshakes until they time out.
 */
const REGISTRATIONS_IN_FLIGHT = 40;
const READY_TIMEOUT_MS = 900_000;

export interface NodeWorkersOptions {
  nodes: number;
  /** What the nodes run: an empty ClientApp, or the rounds scenario's tiny NumPyClient. */
  app: "empty" | "tiny";
  /** Names the workers (`${name}-worker-0`, ...) and their log files in `logDir`. */
  name: string;
  logDir: string;
  /**
   * CPU priority of the workers (default 0). `idle` uses 10: 20 busy workers on 2 cores would
   * otherwise get 20/21 of the CPU under Linux's fair share and starve the SuperLink they
   * measure (10,000 nodes: registrations fell to 10/s, held pulls missed their 60 s deadline).
   * Rounds keep 0: starved nodes on a loaded machine miss their ping deadline.
   */
  nice?: number;
  /**
   * Workers parse their keys, log `idle-worker.loaded` and wait for SIGUSR2 before registering
   * (see startRegistrations), so registration is timed apart from process start-up.
   */
  startOnSignal?: boolean;
  /** Key pair of the first node (default 1): a later batch uses keys no earlier batch used. */
  firstKey?: number;
}

/** Nodes of worker `w` when `nodes` are spread evenly over `workers` (300: 150 + 150, not 250 + 50). */
function workerShare(nodes: number, workers: number, w: number): number {
  return Math.floor(nodes / workers) + (w < nodes % workers ? 1 : 0);
}

/** Starts the workers for nodes firstKey..firstKey + `nodes` - 1 (key pairs of `creds`); see waitForNodeWorkers. */
export function startNodeWorkers(creds: Credentials, superlink: SuperLinkChild, opts: NodeWorkersOptions): Child[] {
  const firstKey = opts.firstKey ?? 1;
  if (firstKey - 1 + opts.nodes > creds.numNodes)
    throw new Error(`${opts.name}: nodes up to ${firstKey - 1 + opts.nodes} but only ${creds.numNodes} key pairs`);
  const workerScript = join(__dirname, "..", "idle-worker.js");
  const numWorkers = Math.ceil(opts.nodes / NODES_PER_WORKER);
  const concurrency = Math.max(1, Math.round(REGISTRATIONS_IN_FLIGHT / numWorkers));
  const workers: Child[] = [];
  for (let first = firstKey, w = 0; w < numWorkers; first += workerShare(opts.nodes, numWorkers, w), w++) {
    const count = workerShare(opts.nodes, numWorkers, w);
    workers.push(
      startNodeScript(`${opts.name}-worker-${w}`, workerScript, {
        logDir: opts.logDir,
        // --profile: the SuperNodes' side too.
        nodeFlags: [...daemonNodeFlagsInUse()],
        args: [
          "--superlink",
          superlink.fleetAddress,
          "--ca",
          creds.caCert,
          "--keys-dir",
          join(creds.dir, "keys"),
          "--first",
          String(first),
          "--count",
          String(count),
          "--concurrency",
          String(concurrency),
          "--app",
          opts.app,
          ...(opts.startOnSignal ? ["--start-on-signal"] : []),
        ],
      }),
    );
  }
  for (const w of workers) {
    if ((opts.nice ?? 0) === 0) break;
    try {
      setPriority(w.pid, opts.nice ?? 0);
    } catch {
      // Not allowed here: the workers keep the default priority.
    }
  }
  return workers;
}

/** Resolves once every worker has registered all its nodes; rejects if any of `children` exits first. */
export async function waitForNodeWorkers(workers: Child[], children: Child[]): Promise<void> {
  await Promise.race([
    Promise.all(
      workers.map((w) => w.waitForLog(`${w.name} ready`, (r) => r["event"] === "idle-worker.ready", READY_TIMEOUT_MS)),
    ),
    failOnExit(children),
  ]);
}

/** With `startOnSignal`: waits until every worker has parsed its keys (rejects if any of `children` exits first). */
export async function waitForNodeWorkersLoaded(workers: Child[], children: Child[]): Promise<void> {
  await Promise.race([
    Promise.all(workers.map((w) => w.waitForLog(`${w.name} loaded`, (r) => r["event"] === "idle-worker.loaded"))),
    failOnExit(children),
  ]);
}

/** With `startOnSignal`: lets every worker start registering at once. */
export function startRegistrations(workers: Child[]): void {
  for (const w of workers) w.proc.kill("SIGUSR2");
}
