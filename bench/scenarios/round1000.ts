/**
 * `round1000`: FedAvg rounds over many authenticated SuperNodes (default 1000) with the rounds
 * scenario's tiny model. The nodes run in-process in bench worker processes (bench/idle-worker.ts
 * `--app tiny`, 500 per process); flower-server-app runs the same legacy FedAvg ServerApp as
 * `rounds` (fit and evaluate on every node). Round times come from the ServerApp's log as in
 * `rounds` (fit + evaluate; a round with a failure or a missing result fails the scenario).
 * Issue 19's goal: a round over 1,000 nodes in under 5 s; every round is one sample (default 10
 * rounds in 1 run: registering 1,000 nodes takes longer than the rounds).
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { writeRoundsApps } from "../lib/apps";
import { type Credentials, startServerAppChild, startSuperLinkChild } from "../lib/deployment";
import { startNodeWorkers, waitForNodeWorkers } from "../lib/node-workers";
import { recordGoal } from "../lib/goals";
import { type Child, type LogRecord, cpuSeconds, failOnExit, say, stopChildren } from "../lib/processes";
import { type Repeated, numericFields, summarize, summarizeRuns } from "../lib/stats";
import { fedAvgRoundTimes } from "./rounds";

export interface Round1000Options {
  nodes: number;
  rounds: number;
}

export interface Round1000Result {
  nodes: number;
  rounds: number;
  workers: number;
  /** From the first worker spawned to every node registered. */
  registerSeconds: number;
  /** [INIT] to [ROUND 1]: initial parameters from one client (+ its evaluation). */
  initSeconds: number;
  /** Wall time of each round (fit + evaluate on every node), seconds. */
  roundSeconds: number[];
  /** [INIT] to the summary line. */
  runSeconds: number;
  /** CPU seconds over the ServerApp's life: the SuperLink, all worker processes together. */
  superlinkCpuSeconds: number;
  workersCpuSeconds: number;
}

/** Runs by default: 1 (its rounds are the samples). */
export const DEFAULT_ROUND1000_REPEAT = 1;
/** Rounds per run by default. */
export const DEFAULT_ROUND1000_ROUNDS = 10;
/** Nodes from which the scenario reports to the 1,000-node round goal. */
const ROUND_GOAL_NODES = 1000;

export async function runRound1000Repeated(
  creds: Credentials,
  workDir: string,
  opts: Round1000Options,
  times: number,
): Promise<Repeated<Round1000Result>> {
  const runs: Round1000Result[] = [];
  for (let i = 0; i < times; i++) {
    if (i > 0) say(`round1000: run ${i + 1} of ${times}`);
    runs.push(await runRound1000(creds, workDir, opts, i + 1));
  }
  const rounds = runs.flatMap((r) => r.roundSeconds);
  if (opts.nodes >= ROUND_GOAL_NODES) {
    recordGoal(
      "round-1000-nodes-seconds",
      rounds,
      `round1000 ${opts.nodes} nodes, FedAvg fit + evaluate, TLS + auth`,
      `every round of ${runs.length} run(s)`,
    );
  }
  const summary = summarizeRuns(runs.map(numericFields));
  const perRound = summarize(rounds);
  if (perRound !== undefined) summary["roundSeconds"] = perRound;
  return { runs, summary };
}

/** One run (fresh SuperLink and nodes); `run` (1, 2, ...) names its log directory. */
export async function runRound1000(
  creds: Credentials,
  workDir: string,
  opts: Round1000Options,
  run = 1,
): Promise<Round1000Result> {
  const dir = join(workDir, `round-${opts.nodes}-run${run}`);
  mkdirSync(dir, { recursive: true });
  writeRoundsApps(dir, opts.rounds, opts.nodes);
  const children: Child[] = [];
  try {
    const superlink = await startSuperLinkChild(creds, dir);
    children.push(superlink.child);
    const startedAt = Date.now();
    const workers = startNodeWorkers(creds, superlink, { nodes: opts.nodes, app: "tiny", name: "round", logDir: dir });
    children.push(...workers);
    say(`round1000: registering ${opts.nodes} SuperNodes in ${workers.length} worker process(es)`);
    await waitForNodeWorkers(workers, children);
    const registerSeconds = (Date.now() - startedAt) / 1000;
    say(
      `round1000: ${opts.nodes} SuperNodes registered in ${registerSeconds.toFixed(1)} s; running ${opts.rounds} rounds`,
    );

    const linkCpu0 = cpuSeconds(superlink.child.pid);
    const workerCpu0 = workers.reduce((s, w) => s + cpuSeconds(w.pid), 0);
    const serverApp = startServerAppChild(creds, superlink, dir, "fedavg_server:app", dir);
    children.push(serverApp);
    const records: LogRecord[] = [];
    serverApp.onLog((rec) => records.push(rec));
    const code = await Promise.race([serverApp.exited, failOnExit(children.filter((c) => c !== serverApp))]);
    const superlinkCpuSeconds = cpuSeconds(superlink.child.pid) - linkCpu0;
    const workersCpuSeconds = workers.reduce((s, w) => s + cpuSeconds(w.pid), 0) - workerCpu0;
    if (code !== 0) throw new Error(`flower-server-app exited with code ${code} (see ${serverApp.logFile})`);
    return {
      nodes: opts.nodes,
      rounds: opts.rounds,
      workers: workers.length,
      registerSeconds,
      ...fedAvgRoundTimes(records, opts.rounds, opts.nodes, serverApp.logFile),
      superlinkCpuSeconds,
      workersCpuSeconds,
    };
  } finally {
    // Workers first so their nodes can deregister, the SuperLink last.
    await stopChildren(children.slice(1), 20_000);
    await stopChildren(children.slice(0, 1));
  }
}
