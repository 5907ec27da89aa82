/**
 * `fedavg`: a legacy FedAvg ServerApp (flower-server-app) with large initial parameters, fit on
 * every SuperNode (flower-client-app children running a NumPyClient that returns fresh arrays),
 * aggregation included. Measures the round time from the ServerApp's log and the peak RSS of
 * every process: the ServerApp's own maxRSS after each round's aggregation (it prints it), the
 * SuperLink's and SuperNodes' VmHWM. Each case gets a fresh SuperLink.
 */
import { freemem } from "node:os";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { RESULT_PREFIX, writeFedAvgApps } from "../lib/apps";
import {
  type Credentials,
  recordTimeMs,
  startServerAppChild,
  startSuperLinkChild,
  startSuperNodeChild,
} from "../lib/deployment";
import { type Child, type LogRecord, cpuSeconds, failOnExit, memoryInfo, say, stopChildren } from "../lib/processes";
import { mibToMB, recordGoal } from "../lib/goals";
import { type Repeated, numericFields, repeat, summarizeRuns } from "../lib/stats";
import { MB } from "./relay";

const TENSOR_BYTES = 2 * MB;

export interface FedAvgCase {
  payloadMB: number;
  nodes: number;
}

export interface FedAvgResult extends FedAvgCase {
  rounds: number;
  skipped?: string;
  /** Fit failures over all rounds (should be 0). */
  failures?: number;
  /** Each round's wall time (configure_fit to the next round), from the ServerApp's log. */
  roundSeconds?: number[];
  serverAppPeakRssMiB?: number;
  superlinkPeakRssMiB?: number;
  supernodePeakRssMiB?: number;
  superlinkCpuSeconds?: number;
}

export async function runFedAvgCase(
  creds: Credentials,
  workDir: string,
  c: FedAvgCase,
  numRounds: number,
  run = 1,
): Promise<FedAvgResult> {
  const payloadBytes = c.payloadMB * MB;
  // SuperLink: the instruction to every node, results in flight; SuperNodes: ~3 copies each.
  const needed = payloadBytes * c.nodes * 8;
  if (needed > freemem() * 0.8) {
    const reason = `needs about ${Math.round(needed / 2 ** 20)} MiB, ${Math.round(freemem() / 2 ** 20)} MiB free`;
    return { ...c, rounds: numRounds, skipped: reason };
  }
  if (c.nodes > creds.numNodes) throw new Error(`fedavg: ${c.nodes} nodes but only ${creds.numNodes} key pairs`);
  const dir = join(workDir, `fedavg-${c.payloadMB}MB-${c.nodes}nodes-run${run}`);
  mkdirSync(dir, { recursive: true });
  writeFedAvgApps(dir, payloadBytes, TENSOR_BYTES, c.nodes, numRounds);
  const children: Child[] = [];
  try {
    const superlink = await startSuperLinkChild(creds, dir);
    children.push(superlink.child);
    const nodes = await Promise.all(
      Array.from({ length: c.nodes }, (_, k) =>
        startSuperNodeChild(k + 1, creds, superlink, dir, "large_client:app", dir, `partition-id=${k}`),
      ),
    );
    children.push(...nodes);
    say(`fedavg ${c.payloadMB} MB x ${c.nodes}: SuperNodes ready; running ${numRounds} round(s)`);
    const linkCpu0 = cpuSeconds(superlink.child.pid);
    const serverApp = startServerAppChild(creds, superlink, dir, "large_fedavg_server:app", dir);
    children.push(serverApp);
    const records: LogRecord[] = [];
    serverApp.onLog((rec) => records.push(rec));
    const code = await Promise.race([serverApp.exited, failOnExit(children.filter((x) => x !== serverApp))]);
    if (code !== 0) throw new Error(`fedavg: flower-server-app exited with code ${code} (see ${serverApp.logFile})`);
    // A node that misses its ping deadline on a loaded machine fails its fit: counted, not fatal.
    const failures = records
      .filter((r) => r["event"] === "serverapp.aggregate-fit")
      .reduce((n, r) => n + Number(r["failures"] ?? 0), 0);
    const starts = records.filter((r) => r["event"] === "serverapp.round").map(recordTimeMs);
    const summary = records.find((r) => r["event"] === "serverapp.summary");
    if (summary === undefined || starts.length !== numRounds)
      throw new Error(`fedavg: no summary in ${serverApp.logFile}`);
    const marks = [...starts, recordTimeMs(summary)];
    const reports = serverApp.stdoutLines
      .filter((l) => l.startsWith(RESULT_PREFIX))
      .map((l) => JSON.parse(l.slice(RESULT_PREFIX.length)) as { peakRssKiB: number });
    if (reports.length === 0) throw new Error(`fedavg: the ServerApp printed no result (see ${serverApp.logFile})`);
    return {
      ...c,
      rounds: numRounds,
      failures,
      roundSeconds: starts.map((_, i) => (marks[i + 1]! - marks[i]!) / 1000),
      serverAppPeakRssMiB: Math.max(...reports.map((r) => r.peakRssKiB)) / 1024,
      superlinkPeakRssMiB: memoryInfo(superlink.child.pid).peakRssMiB,
      supernodePeakRssMiB: Math.max(...nodes.map((n) => memoryInfo(n.pid).peakRssMiB)),
      superlinkCpuSeconds: cpuSeconds(superlink.child.pid) - linkCpu0,
    };
  } finally {
    await stopChildren(children.slice(1));
    await stopChildren(children.slice(0, 1));
  }
}

/** A case run `runs.length` times (fresh daemons each time), with the median of every figure. */
export interface FedAvgCaseResult extends FedAvgCase, Repeated<FedAvgResult> {
  rounds: number;
  skipped?: string;
}

/**
 * Runs of a case by default: 1 (100 MB x 10 takes tens of seconds and a peak RSS is one number
 * per run; `--repeat N` for more).
 */
export const DEFAULT_FEDAVG_REPEAT = 1;

function fedavgFields(r: FedAvgResult): Record<string, number> {
  const fields = numericFields(r);
  (r.roundSeconds ?? []).forEach((s, i) => (fields[`round ${i + 1}`] = s));
  return fields;
}

export async function runFedAvg(
  creds: Credentials,
  workDir: string,
  cases: FedAvgCase[],
  numRounds: number,
  times: number,
): Promise<FedAvgCaseResult[]> {
  const results: FedAvgCaseResult[] = [];
  for (const c of cases) {
    const first = await runFedAvgCase(creds, workDir, c, numRounds);
    if (first.skipped !== undefined) {
      results.push({ ...c, rounds: numRounds, skipped: first.skipped, runs: [], summary: {} });
      continue;
    }
    const rest = await repeat(times - 1, (i) => {
      say(`fedavg ${c.payloadMB} MB x ${c.nodes}: run ${i + 2} of ${times}`);
      return runFedAvgCase(creds, workDir, c, numRounds, i + 2);
    });
    const runs = [first, ...rest.runs];
    results.push({ ...c, rounds: numRounds, runs, summary: summarizeRuns(runs.map(fedavgFields)) });
    if (c.payloadMB === 100 && c.nodes === 10) {
      const source = `fedavg 100 MB x 10, ${numRounds} round(s)`;
      const note = "one peak per run";
      const mb = (pick: (r: FedAvgResult) => number | undefined): number[] =>
        runs.map(pick).flatMap((x) => (x === undefined ? [] : [mibToMB(x)]));
      recordGoal(
        "serverapp-peak-rss-100x10-mb",
        mb((r) => r.serverAppPeakRssMiB),
        source,
        note,
      );
      recordGoal(
        "superlink-peak-rss-100x10-mb",
        mb((r) => r.superlinkPeakRssMiB),
        source,
        note,
      );
    }
  }
  return results;
}
