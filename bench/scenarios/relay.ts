/**
 * `relay`: a Message-API ServerApp (flower-server-app) sends one message with a large
 * ParametersRecord to every SuperNode (flower-client-app children running an echo ClientApp)
 * and waits until each has sent the whole payload back. Every case gets a fresh SuperLink, so
 * its peak RSS (VmHWM) belongs to that case alone.
 */
import { freemem } from "node:os";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { RESULT_PREFIX, writeRelayApps } from "../lib/apps";
import {
  type Credentials,
  type Security,
  startServerAppChild,
  startSuperLinkChild,
  startSuperNodeChild,
} from "../lib/deployment";
import { mibToMB, recordGoal } from "../lib/goals";
import { type Child, cpuSeconds, failOnExit, memoryInfo, say, stopChildren } from "../lib/processes";
import { type Repeated, numericFields, repeat, summarizeRuns } from "../lib/stats";

export const MB = 1_000_000;
/** Payloads are float32 tensors of this size (a 10 MB payload is 5 tensors). */
const TENSOR_BYTES = 2 * MB;
/**
 * Rough upper bound of memory one case needs, per payload byte per node: the SuperLink holds
 * TaskIns and TaskRes (plus encode/decode copies), each SuperNode a few copies, the ServerApp
 * one encoded copy per push. Measured peaks stay well below it (see README).
 */
const BYTES_NEEDED_PER_PAYLOAD_BYTE_PER_NODE = 12;

export interface RelayCase {
  payloadMB: number;
  nodes: number;
  security: Security;
}

export interface RelayResult extends RelayCase {
  /** Set when the case was not run (not enough memory). */
  skipped?: string;
  /** Push of the last message acknowledged by the SuperLink, seconds after the first push began. */
  allPushedSeconds?: number;
  /** Every node's full echo pulled by the ServerApp, seconds after the first push began. */
  roundTripSeconds?: number;
  /** Payload bytes moved per second: nodes x payload x 2 (down and up) / roundTripSeconds, MB/s. */
  throughputMBps?: number;
  superlinkRssBeforeMiB?: number;
  superlinkPeakRssMiB?: number;
  /** Highest peak RSS among the SuperNode processes. */
  supernodePeakRssMiB?: number;
  /** The ServerApp process's peak RSS (its own getrusage), measured at the end of its run. */
  serverAppPeakRssMiB?: number;
  /** CPU seconds (user + system) each process used from the ServerApp's start to its exit. */
  superlinkCpuSeconds?: number;
  /** All SuperNodes together. */
  supernodesCpuSeconds?: number;
  /** The ServerApp's, from the first push to the last reply. */
  serverAppCpuSeconds?: number;
}

interface ServerAppReport {
  nodes: number;
  payloadBytes: number;
  allPushedMs: number;
  totalMs: number;
  firstReplyMs: number;
  cpuMs: number;
  peakRssKiB: number;
}

/** "100 MB x 2, TLS + auth" */
export function relayCaseName(c: RelayCase): string {
  return `${c.payloadMB} MB x ${c.nodes}, ${SECURITY_NAMES[c.security]}`;
}

const SECURITY_NAMES: Record<Security, string> = {
  "tls+auth": "TLS + auth",
  tls: "TLS, no auth",
  plaintext: "plaintext",
};
const SECURITY_DIRS: Record<Security, string> = { "tls+auth": "tls-auth", tls: "tls", plaintext: "plain" };

/** One run of a case; `run` (1, 2, ...) names its log directory. */
export async function runRelayCase(creds: Credentials, workDir: string, c: RelayCase, run = 1): Promise<RelayResult> {
  const payloadBytes = c.payloadMB * MB;
  const needed = payloadBytes * c.nodes * BYTES_NEEDED_PER_PAYLOAD_BYTE_PER_NODE;
  if (needed > freemem() * 0.8) {
    const reason = `needs about ${Math.round(needed / 2 ** 20)} MiB, ${Math.round(freemem() / 2 ** 20)} MiB free`;
    say(`relay ${relayCaseName(c)}: skipped (${reason})`);
    return { ...c, skipped: reason };
  }
  if (c.nodes > creds.numNodes) throw new Error(`relay: ${c.nodes} nodes but only ${creds.numNodes} key pairs`);
  const dir = join(workDir, `relay-${c.payloadMB}MB-${c.nodes}nodes-${SECURITY_DIRS[c.security]}-run${run}`);
  mkdirSync(dir, { recursive: true });
  writeRelayApps(dir, payloadBytes, TENSOR_BYTES, c.nodes);
  const children: Child[] = [];
  try {
    const superlink = await startSuperLinkChild(creds, dir, "superlink", c.security);
    children.push(superlink.child);
    const nodes = await Promise.all(
      Array.from({ length: c.nodes }, (_, k) =>
        startSuperNodeChild(k + 1, creds, superlink, dir, "echo_client:app", dir, undefined, c.security),
      ),
    );
    children.push(...nodes);
    const before = memoryInfo(superlink.child.pid);
    say(`relay ${relayCaseName(c)}: ${c.nodes} SuperNodes ready; relaying`);

    const linkCpu0 = cpuSeconds(superlink.child.pid);
    const nodesCpu = (): number => nodes.reduce((sum, n) => sum + cpuSeconds(n.pid), 0);
    const nodesCpu0 = nodesCpu();
    const serverApp = startServerAppChild(creds, superlink, dir, "relay_server:app", dir, c.security);
    children.push(serverApp);
    const code = await Promise.race([serverApp.exited, failOnExit(children.filter((x) => x !== serverApp))]);
    if (code !== 0) throw new Error(`relay: flower-server-app exited with code ${code} (see ${serverApp.logFile})`);
    const line = serverApp.stdoutLines.find((l) => l.startsWith(RESULT_PREFIX));
    if (line === undefined) throw new Error(`relay: the ServerApp printed no result (see ${serverApp.logFile})`);
    const report = JSON.parse(line.slice(RESULT_PREFIX.length)) as ServerAppReport;

    const superlinkCpuSeconds = cpuSeconds(superlink.child.pid) - linkCpu0;
    const supernodesCpuSeconds = nodesCpu() - nodesCpu0;
    const linkMem = memoryInfo(superlink.child.pid);
    const nodePeak = Math.max(...nodes.map((n) => memoryInfo(n.pid).peakRssMiB));
    const roundTripSeconds = report.totalMs / 1000;
    return {
      ...c,
      allPushedSeconds: report.allPushedMs / 1000,
      roundTripSeconds,
      throughputMBps: (c.nodes * c.payloadMB * 2) / roundTripSeconds,
      superlinkRssBeforeMiB: before.rssMiB,
      superlinkPeakRssMiB: linkMem.peakRssMiB,
      supernodePeakRssMiB: nodePeak,
      serverAppPeakRssMiB: report.peakRssKiB / 1024,
      superlinkCpuSeconds,
      supernodesCpuSeconds,
      serverAppCpuSeconds: report.cpuMs / 1000,
    };
  } finally {
    await stopChildren(children.slice(1));
    await stopChildren(children.slice(0, 1));
  }
}

/** A case run `runs.length` times (fresh daemons each time), with the median of every figure. */
export interface RelayCaseResult extends RelayCase, Repeated<RelayResult> {
  /** Set when the case was not run (not enough memory). */
  skipped?: string;
}

/** Runs of a case by default: 10 for the 100 MB x 2 goal, 3 when payload x nodes >= 1 GB, else 5. */
export function defaultRelayRepeat(c: RelayCase): number {
  if (c.payloadMB * c.nodes >= 1000) return 3;
  return c.payloadMB === 100 && c.nodes === 2 && c.security === "tls+auth" ? 10 : 5;
}

export async function runRelay(
  creds: Credentials,
  workDir: string,
  cases: RelayCase[],
  repeatOf: (c: RelayCase) => number,
): Promise<RelayCaseResult[]> {
  const results: RelayCaseResult[] = [];
  for (const c of cases) {
    const times = repeatOf(c);
    const first = await runRelayCase(creds, workDir, c);
    if (first.skipped !== undefined) {
      results.push({ ...c, skipped: first.skipped, runs: [], summary: {} });
      continue;
    }
    const rest = await repeat(times - 1, (i) => {
      say(`relay ${relayCaseName(c)}: run ${i + 2} of ${times}`);
      return runRelayCase(creds, workDir, c, i + 2);
    });
    const runs = [first, ...rest.runs];
    const r: RelayCaseResult = { ...c, runs, summary: summarizeRuns(runs.map(numericFields)) };
    results.push(r);
    recordRelayGoals(r);
  }
  return results;
}

function recordRelayGoals(r: RelayCaseResult): void {
  if (r.security !== "tls+auth" || r.payloadMB !== 100) return;
  const source = `relay ${relayCaseName(r)}`;
  const samples = (pick: (x: RelayResult) => number | undefined): number[] =>
    r.runs.map(pick).filter((x): x is number => x !== undefined);
  if (r.nodes === 2)
    recordGoal(
      "relay-100x2-seconds",
      samples((x) => x.roundTripSeconds),
      source,
    );
  if (r.nodes !== 10) return;
  recordGoal(
    "relay-100x10-seconds",
    samples((x) => x.roundTripSeconds),
    source,
  );
  const mb = (mib: number | undefined): number | undefined => (mib === undefined ? undefined : mibToMB(mib));
  recordGoal(
    "serverapp-peak-rss-100x10-mb",
    samples((x) => mb(x.serverAppPeakRssMiB)),
    source,
  );
  recordGoal(
    "superlink-peak-rss-100x10-mb",
    samples((x) => mb(x.superlinkPeakRssMiB)),
    source,
  );
}
