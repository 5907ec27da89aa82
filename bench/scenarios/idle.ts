/**
 * `idle`: N authenticated SuperNodes with nothing to do, run in-process by a few bench worker
 * processes (bench/idle-worker.ts), against a SuperLink child. Measures the SuperLink's CPU
 * (utime + stime from /proc over a window), its RSS, and what the idle traffic is (RPC rates
 * from its --metrics-address endpoint): pings every ~20 s per node, plus each node's long-poll
 * PullTaskIns that the SuperLink holds open for up to --fleet-long-poll-ms (30 s). Extra
 * flower-superlink flags for an A/B come from the environment, BENCH_SUPERLINK_ARGS (e.g.
 * "--fleet-long-poll-ms 2000", the hold before it had its own cap).
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { type Credentials, type SuperLinkChild, scrapeMetrics, startSuperLinkChild } from "../lib/deployment";
import {
  startNodeWorkers,
  startRegistrations,
  waitForNodeWorkers,
  waitForNodeWorkersLoaded,
} from "../lib/node-workers";
import { recordGoal } from "../lib/goals";
import {
  type Child,
  cpuSeconds,
  failOnExit,
  mainThreadCpuSeconds,
  memoryInfo,
  say,
  sleep,
  stopChildren,
} from "../lib/processes";
import { type Repeated, type Summary, numericFields, summarize, summarizeRuns } from "../lib/stats";

/** Wait after the last registration before measuring, so start-up work is not counted. */
const SETTLE_MS = 5_000;
const SAMPLE_MS = 1_000;

export interface IdleOptions {
  nodes: number;
  windowSeconds: number;
}

export interface IdleResult {
  nodes: number;
  windowSeconds: number;
  workers: number;
  /** From the start signal (every worker started, its keys parsed) to every node registered. */
  registerSeconds: number;
  /** nodes / registerSeconds: SuperLink and SuperNodes sharing this machine's cores. */
  registrationsPerSecond: number;
  /** SuperLink CPU from the start signal to every node registered, per node. */
  superlinkCpuMsPerRegistration: number;
  /** The worker processes' CPU over the same span, per node: the SuperNodes' side of a registration. */
  workersCpuMsPerRegistration: number;
  /** 1000 / superlinkCpuMsPerRegistration: registrations/s one core could take on the SuperLink side. */
  superlinkRegistrationCeilingPerSecond: number;
  /**
   * The SuperLink's main thread (its event loop) over the same span, per node: the part of
   * superlinkCpuMsPerRegistration that cannot move to another core.
   */
  superlinkMainThreadMsPerRegistration: number;
  /** 1000 / superlinkMainThreadMsPerRegistration: the event loop's ceiling when the other threads have a core of their own. */
  superlinkEventLoopCeilingPerSecond: number;
  /** SuperLink CPU over the window, % of one core. */
  superlinkCpuPercent: number;
  superlinkRssIdleMiB: number;
  superlinkRssMiB: number;
  superlinkPeakRssMiB: number;
  /** Nodes the SuperLink counted online (flwr_superlink_online_nodes) at the end of the window. */
  onlineNodes: number;
  /** RPCs per second over the window, by Fleet method. */
  rpcPerSecond: Record<string, number>;
  /** The SuperLink's JS heap (used) and memory outside it held by JS objects (Buffers, TLS/HTTP-2 wrappers), at the end. */
  superlinkHeapUsedMiB: number;
  superlinkExternalMiB: number;
  /** CPU of all worker processes together over the window, % of one core (the nodes' own cost). */
  workersCpuPercent: number;
  /** RSS of all worker processes together at the end of the window. */
  workersRssMiB: number;
  /** SuperLink CPU over each 1 s of the window, % of one core. */
  superlinkCpuPercentPerSecond: number[];
  /** SuperLink RSS at the end of each 1 s of the window, MiB. */
  superlinkRssMiBPerSecond: number[];
  /**
   * A second batch of `nodes` fresh keys registered on the same SuperLink after the first batch
   * left (DeleteNode; see warmBatchNodes): a long-running SuperLink's code is optimized by then.
   * New worker processes, so the SuperNodes' side stays cold. Absent when not measured.
   */
  warmRegisterSeconds?: number;
  warmRegistrationsPerSecond?: number;
  warmSuperlinkCpuMsPerRegistration?: number;
  warmSuperlinkRegistrationCeilingPerSecond?: number;
  warmSuperlinkMainThreadMsPerRegistration?: number;
  warmSuperlinkEventLoopCeilingPerSecond?: number;
  warmWorkersCpuMsPerRegistration?: number;
}

/** Runs by default: 1 (the window's 1 s samples give the medians of CPU and RSS). */
export const DEFAULT_IDLE_REPEAT = 1;
/** Nodes from which idle reports to the 10,000-idle-nodes goals. */
const IDLE_GOAL_NODES = 10_000;
/** Fewer nodes register in too short a time for a rate worth reporting. */
const REGISTRATION_GOAL_NODES = 300;
/** Up to this many nodes, a second (warm) batch is registered after the window. */
const WARM_BATCH_MAX_NODES = 1_000;

/** Nodes of the warm second batch for a run of `nodes` (0: none); they need key pairs of their own. */
export function warmBatchNodes(nodes: number): number {
  return nodes >= REGISTRATION_GOAL_NODES && nodes <= WARM_BATCH_MAX_NODES ? nodes : 0;
}

/** The figures the table summarizes over runs; CPU and RSS over every 1 s sample of every run. */
export function summarizeIdle(runs: readonly IdleResult[]): Record<string, Summary> {
  const summary = summarizeRuns(runs.map(numericFields));
  const cpu = summarize(runs.flatMap((r) => r.superlinkCpuPercentPerSecond));
  const rss = summarize(runs.flatMap((r) => r.superlinkRssMiBPerSecond));
  if (cpu !== undefined) summary["superlinkCpuPercentPerSecond"] = cpu;
  if (rss !== undefined) summary["superlinkRssMiBPerSecond"] = rss;
  return summary;
}

export async function runIdleRepeated(
  creds: Credentials,
  workDir: string,
  opts: IdleOptions,
  times: number,
): Promise<Repeated<IdleResult>> {
  const runs: IdleResult[] = [];
  for (let i = 0; i < times; i++) {
    if (i > 0) say(`idle: run ${i + 1} of ${times}`);
    runs.push(await runIdle(creds, workDir, opts, i + 1));
  }
  const source = `idle ${opts.nodes} nodes`;
  const note = `1 s samples within ${runs.length} run(s)`;
  if (opts.nodes >= REGISTRATION_GOAL_NODES) {
    recordGoal(
      "registrations-per-second",
      runs.map((r) => r.registrationsPerSecond),
      `${source}, end to end (SuperLink and SuperNodes on this machine's cores)`,
      "one rate per run",
    );
    recordGoal(
      "registrations-per-second",
      runs.map((r) => r.superlinkRegistrationCeilingPerSecond),
      `${source}, SuperLink side: 1000 / its CPU ms per registration (one core)`,
      "one value per run",
    );
    recordGoal(
      "registrations-per-second",
      runs.map((r) => r.superlinkEventLoopCeilingPerSecond),
      `${source}, SuperLink event loop: 1000 / its main thread's CPU ms per registration`,
      "one value per run; the SuperLink's other threads (V8 compiler and GC, key precompute) need a core of their own",
    );
    const warm = runs.filter((r) => r.warmRegistrationsPerSecond !== undefined);
    if (warm.length > 0) {
      const label = `${source}, warm: a second ${opts.nodes} fresh nodes on the same SuperLink after the first left`;
      recordGoal(
        "registrations-per-second",
        warm.map((r) => r.warmRegistrationsPerSecond ?? 0),
        `${label}, end to end`,
        "one rate per run; the cold first batch is the line above",
      );
      recordGoal(
        "registrations-per-second",
        warm.map((r) => r.warmSuperlinkRegistrationCeilingPerSecond ?? 0),
        `${label}, SuperLink side (one core)`,
        "one value per run",
      );
      recordGoal(
        "registrations-per-second",
        warm.map((r) => r.warmSuperlinkEventLoopCeilingPerSecond ?? 0),
        `${label}, SuperLink event loop`,
        "one value per run",
      );
    }
  }
  if (opts.nodes >= IDLE_GOAL_NODES) {
    recordGoal(
      "idle-10000-superlink-cores",
      runs.flatMap((r) => r.superlinkCpuPercentPerSecond.map((p) => p / 100)),
      source,
      note,
    );
    recordGoal(
      "idle-10000-superlink-rss-mib",
      runs.flatMap((r) => r.superlinkRssMiBPerSecond),
      source,
      note,
    );
  }
  return { runs, summary: summarizeIdle(runs) };
}

function fleetRpcCounts(metrics: Map<string, number>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const [key, value] of metrics) {
    const m = /^flwr_superlink_rpcs_total\{service="Fleet",method="([^"]+)",code="([^"]+)"\}$/.exec(key);
    if (!m) continue;
    const name = m[2] === "OK" ? m[1]! : `${m[1]}(${m[2]})`;
    counts.set(name, (counts.get(name) ?? 0) + value);
  }
  return counts;
}

/** One run (fresh SuperLink and nodes); `run` (1, 2, ...) names its log directory. */
export async function runIdle(creds: Credentials, workDir: string, opts: IdleOptions, run = 1): Promise<IdleResult> {
  const dir = join(workDir, `idle-${opts.nodes}-run${run}`);
  mkdirSync(dir, { recursive: true });
  const children: Child[] = [];
  try {
    const superlink = await startSuperLinkChild(
      creds,
      dir,
      "superlink",
      "tls+auth",
      (process.env["BENCH_SUPERLINK_ARGS"] ?? "").split(" ").filter((a) => a !== ""),
    );
    children.push(superlink.child);
    await sleep(1_000);
    const idleMem = memoryInfo(superlink.child.pid);

    const cold = await registerBatch(creds, superlink, children, { nodes: opts.nodes, firstKey: 1, name: "idle", dir });
    const { workers, registerSeconds, registrationCpuSeconds, registrationMainThreadSeconds } = cold;
    say(
      `idle: ${opts.nodes} SuperNodes registered in ${registerSeconds.toFixed(1)} s; measuring for ${opts.windowSeconds} s`,
    );
    await sleep(SETTLE_MS);

    const linkCpu0 = cpuSeconds(superlink.child.pid);
    const workerCpu0 = workers.reduce((s, w) => s + cpuSeconds(w.pid), 0);
    const rpc0 = fleetRpcCounts(await scrapeMetrics(superlink.metricsAddress));
    const t0 = Date.now();
    // CPU and RSS every second of the window: >= 10 samples from one run for the medians.
    const failed = failOnExit(children);
    const cpuSamples: number[] = [];
    const rssSamples: number[] = [];
    let lastCpu = linkCpu0;
    let lastAt = t0;
    while (Date.now() - t0 < opts.windowSeconds * 1000 - 50) {
      await Promise.race([sleep(Math.min(SAMPLE_MS, opts.windowSeconds * 1000 - (Date.now() - t0))), failed]);
      const at = Date.now();
      const cpu = cpuSeconds(superlink.child.pid);
      cpuSamples.push((100 * (cpu - lastCpu)) / ((at - lastAt) / 1000));
      rssSamples.push(memoryInfo(superlink.child.pid).rssMiB);
      lastCpu = cpu;
      lastAt = at;
    }
    const elapsed = (Date.now() - t0) / 1000;
    const linkCpu = cpuSeconds(superlink.child.pid) - linkCpu0;
    const workerCpu = workers.reduce((s, w) => s + cpuSeconds(w.pid), 0) - workerCpu0;
    const metrics = await scrapeMetrics(superlink.metricsAddress);
    const rpc1 = fleetRpcCounts(metrics);
    const mem = memoryInfo(superlink.child.pid);
    const workersRssMiB = workers.reduce((sum, w) => sum + memoryInfo(w.pid).rssMiB, 0);
    const warm = await warmBatch(creds, superlink, children, workers, { nodes: opts.nodes, dir });

    const rpcPerSecond: Record<string, number> = {};
    for (const [name, n] of rpc1) {
      const delta = n - (rpc0.get(name) ?? 0);
      if (delta > 0) rpcPerSecond[name] = delta / elapsed;
    }
    return {
      nodes: opts.nodes,
      windowSeconds: elapsed,
      workers: workers.length,
      registerSeconds,
      registrationsPerSecond: opts.nodes / registerSeconds,
      superlinkCpuMsPerRegistration: (1000 * registrationCpuSeconds) / opts.nodes,
      workersCpuMsPerRegistration: (1000 * cold.workersRegistrationCpuSeconds) / opts.nodes,
      superlinkRegistrationCeilingPerSecond: opts.nodes / Math.max(registrationCpuSeconds, 1e-3),
      superlinkMainThreadMsPerRegistration: (1000 * registrationMainThreadSeconds) / opts.nodes,
      superlinkEventLoopCeilingPerSecond: opts.nodes / Math.max(registrationMainThreadSeconds, 1e-3),
      superlinkCpuPercent: (100 * linkCpu) / elapsed,
      superlinkRssIdleMiB: idleMem.rssMiB,
      superlinkRssMiB: mem.rssMiB,
      superlinkPeakRssMiB: mem.peakRssMiB,
      onlineNodes: metrics.get("flwr_superlink_online_nodes") ?? 0,
      rpcPerSecond,
      superlinkHeapUsedMiB: (metrics.get("nodejs_heap_size_used_bytes") ?? 0) / 2 ** 20,
      superlinkExternalMiB: (metrics.get("nodejs_external_memory_bytes") ?? 0) / 2 ** 20,
      workersCpuPercent: (100 * workerCpu) / elapsed,
      workersRssMiB,
      superlinkCpuPercentPerSecond: cpuSamples,
      superlinkRssMiBPerSecond: rssSamples,
      ...warm,
    };
  } finally {
    await stopChildren(children.slice(1), 20_000);
    await stopChildren(children.slice(0, 1));
  }
}

interface Batch {
  workers: Child[];
  registerSeconds: number;
  registrationCpuSeconds: number;
  registrationMainThreadSeconds: number;
  workersRegistrationCpuSeconds: number;
}

/**
 * Starts workers for `nodes` nodes from key `firstKey` and times their registration from one
 * signal to all workers, once each has started and parsed its keys (process start-up and key
 * files are not registration). The workers join `children`.
 */
async function registerBatch(
  creds: Credentials,
  superlink: SuperLinkChild,
  children: Child[],
  batch: { nodes: number; firstKey: number; name: string; dir: string },
): Promise<Batch> {
  const workers = startNodeWorkers(creds, superlink, {
    nodes: batch.nodes,
    app: "empty",
    name: batch.name,
    logDir: batch.dir,
    nice: 10,
    startOnSignal: true,
    firstKey: batch.firstKey,
  });
  children.push(...workers);
  await waitForNodeWorkersLoaded(workers, children);
  say(`${batch.name}: registering ${batch.nodes} SuperNodes in ${workers.length} worker process(es)`);
  const linkCpuBefore = cpuSeconds(superlink.child.pid);
  const linkMainBefore = mainThreadCpuSeconds(superlink.child.pid);
  const workersCpuBefore = workers.reduce((sum, w) => sum + cpuSeconds(w.pid), 0);
  const startedAt = Date.now();
  startRegistrations(workers);
  await waitForNodeWorkers(workers, children);
  return {
    workers,
    registerSeconds: (Date.now() - startedAt) / 1000,
    registrationCpuSeconds: cpuSeconds(superlink.child.pid) - linkCpuBefore,
    registrationMainThreadSeconds: mainThreadCpuSeconds(superlink.child.pid) - linkMainBefore,
    workersRegistrationCpuSeconds: workers.reduce((sum, w) => sum + cpuSeconds(w.pid), 0) - workersCpuBefore,
  };
}

/** Pause after the first batch left, so its DeleteNodes and closing connections are not counted. */
const WARM_BATCH_PAUSE_MS = 2_000;

/** The warm second batch (see IdleResult.warmRegistrationsPerSecond): the first batch's workers stop first. */
async function warmBatch(
  creds: Credentials,
  superlink: SuperLinkChild,
  children: Child[],
  firstWorkers: Child[],
  opts: { nodes: number; dir: string },
): Promise<Partial<IdleResult>> {
  const nodes = warmBatchNodes(opts.nodes);
  if (nodes === 0 || creds.numNodes < opts.nodes + nodes) return {};
  await stopChildren(firstWorkers, 20_000);
  children.splice(0, children.length, ...children.filter((c) => !firstWorkers.includes(c)));
  await sleep(WARM_BATCH_PAUSE_MS);
  const warm = await registerBatch(creds, superlink, children, {
    nodes,
    firstKey: opts.nodes + 1,
    name: "idle-warm",
    dir: opts.dir,
  });
  say(`idle: warm batch of ${nodes} SuperNodes registered in ${warm.registerSeconds.toFixed(1)} s`);
  return {
    warmRegisterSeconds: warm.registerSeconds,
    warmRegistrationsPerSecond: nodes / warm.registerSeconds,
    warmSuperlinkCpuMsPerRegistration: (1000 * warm.registrationCpuSeconds) / nodes,
    warmSuperlinkRegistrationCeilingPerSecond: nodes / Math.max(warm.registrationCpuSeconds, 1e-3),
    warmSuperlinkMainThreadMsPerRegistration: (1000 * warm.registrationMainThreadSeconds) / nodes,
    warmSuperlinkEventLoopCeilingPerSecond: nodes / Math.max(warm.registrationMainThreadSeconds, 1e-3),
    warmWorkersCpuMsPerRegistration: (1000 * warm.workersRegistrationCpuSeconds) / nodes,
  };
}
