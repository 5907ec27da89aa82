/**
 * `rounds`: a 3-round FedAvg run through real daemons — SuperLink (TLS + node authentication),
 * 2 SuperNodes running a tiny NumPyClient, flower-server-app with a legacy FedAvg ServerApp.
 * Round times come from the ServerApp's own log timestamps: round r lasts from its
 * `serverapp.round` line to the next one (or to `serverapp.summary`), i.e. fit + evaluate.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { writeRoundsApps } from "../lib/apps";
import {
  type Credentials,
  recordTimeMs,
  startServerAppChild,
  startSuperLinkChild,
  startSuperNodeChild,
} from "../lib/deployment";
import { type Child, type LogRecord, cpuSeconds, failOnExit, say, stopChildren } from "../lib/processes";
import { type Repeated, numericFields, repeat } from "../lib/stats";

export interface RoundsOptions {
  numRounds: number;
  numNodes: number;
}

export interface RoundsResult {
  rounds: number;
  nodes: number;
  /** [INIT] to [ROUND 1]: initial parameters from one client (+ its evaluation). */
  initSeconds: number;
  /** Wall time of each round (fit + evaluate), seconds. */
  roundSeconds: number[];
  /** [INIT] to the summary line. */
  runSeconds: number;
  /** flower-server-app spawned to exited (includes Node start-up and loading the app). */
  serverAppProcessSeconds: number;
  /** CPU seconds the SuperLink used during the ServerApp's life. */
  superlinkCpuSeconds: number;
}

/**
 * Round times from a legacy FedAvg ServerApp's log: [INIT] to the first round, each round from
 * its `serverapp.round` line to the next one (or the summary), and [INIT] to the summary.
 * Throws if a line is missing or a round had a failure or fewer results than `numNodes`.
 */
export function fedAvgRoundTimes(
  records: LogRecord[],
  numRounds: number,
  numNodes: number,
  logFile: string,
): { initSeconds: number; roundSeconds: number[]; runSeconds: number } {
  const init = records.find((r) => r["msg"] === "[INIT]");
  const roundStarts = records.filter((r) => r["event"] === "serverapp.round");
  const summary = records.find((r) => r["event"] === "serverapp.summary");
  if (!init || !summary || roundStarts.length !== numRounds) {
    throw new Error(`rounds: expected [INIT], ${numRounds} round lines and a summary in ${logFile}`);
  }
  // A round with a failed client would be timed but not be a full round: refuse it.
  for (const rec of records.filter(
    (r) => r["event"] === "serverapp.aggregate-fit" || r["event"] === "serverapp.aggregate-evaluate",
  )) {
    if (rec["results"] !== numNodes || rec["failures"] !== 0) {
      throw new Error(
        `rounds: round ${String(rec["round"])} had ${String(rec["results"])} result(s) and ${String(rec["failures"])} failure(s) (see ${logFile})`,
      );
    }
  }
  const marks = [...roundStarts.map(recordTimeMs), recordTimeMs(summary)];
  return {
    initSeconds: (marks[0]! - recordTimeMs(init)) / 1000,
    roundSeconds: roundStarts.map((_, i) => (marks[i + 1]! - marks[i]!) / 1000),
    runSeconds: (recordTimeMs(summary) - recordTimeMs(init)) / 1000,
  };
}

/** One run (fresh daemons); `run` (1, 2, ...) names its log directory. */
export async function runRounds(
  creds: Credentials,
  workDir: string,
  opts: RoundsOptions,
  run = 1,
): Promise<RoundsResult> {
  const dir = join(workDir, `rounds-run${run}`);
  mkdirSync(dir, { recursive: true });
  writeRoundsApps(dir, opts.numRounds, opts.numNodes);
  const children: Child[] = [];
  try {
    const superlink = await startSuperLinkChild(creds, dir);
    children.push(superlink.child);
    const nodes = await Promise.all(
      Array.from({ length: opts.numNodes }, (_, k) =>
        startSuperNodeChild(
          k + 1,
          creds,
          superlink,
          dir,
          "tiny_client:app",
          dir,
          `partition-id=${k},num-partitions=${opts.numNodes}`,
        ),
      ),
    );
    children.push(...nodes);
    say(`rounds: SuperLink and ${opts.numNodes} SuperNodes ready; running ${opts.numRounds} FedAvg rounds`);

    const cpuBefore = cpuSeconds(superlink.child.pid);
    const spawnedAt = Date.now();
    const serverApp = startServerAppChild(creds, superlink, dir, "fedavg_server:app", dir);
    children.push(serverApp);
    const records: LogRecord[] = [];
    serverApp.onLog((rec) => records.push(rec));
    const code = await Promise.race([serverApp.exited, failOnExit(children.filter((c) => c !== serverApp))]);
    const serverAppProcessSeconds = (Date.now() - spawnedAt) / 1000;
    const superlinkCpuSeconds = cpuSeconds(superlink.child.pid) - cpuBefore;
    if (code !== 0) throw new Error(`flower-server-app exited with code ${code} (see ${serverApp.logFile})`);

    const times = fedAvgRoundTimes(records, opts.numRounds, opts.numNodes, serverApp.logFile);
    return {
      rounds: opts.numRounds,
      nodes: opts.numNodes,
      ...times,
      serverAppProcessSeconds,
      superlinkCpuSeconds,
    };
  } finally {
    // SuperNodes first so they can deregister, the SuperLink last.
    await stopChildren(children.slice(1));
    await stopChildren(children.slice(0, 1));
  }
}

/** The figures of one run the table summarizes: each round, their sum, and the top-level numbers. */
export function roundsFields(r: RoundsResult): Record<string, number> {
  const fields = numericFields(r);
  r.roundSeconds.forEach((s, i) => (fields[`round ${i + 1}`] = s));
  fields["all rounds"] = r.roundSeconds.reduce((a, b) => a + b, 0);
  return fields;
}

/** Default runs: 10 (each a few seconds). */
export const DEFAULT_ROUNDS_REPEAT = 10;

export function runRoundsRepeated(
  creds: Credentials,
  workDir: string,
  opts: RoundsOptions,
  times: number,
): Promise<Repeated<RoundsResult>> {
  return repeat(
    times,
    (i) => {
      if (i > 0) say(`rounds: run ${i + 1} of ${times}`);
      return runRounds(creds, workDir, opts, i + 1);
    },
    roundsFields,
  );
}
