/**
 * `npm run bench:replicas [-- --nodes N --idle-seconds S]`: SuperLink replicas on PostgreSQL,
 * 1 replica vs 2, with N authenticated idle SuperNodes (in-process, bench/idle-worker.ts)
 * spread over the replicas. Per case: registration time (first worker spawned to every node
 * registered), then over the window the CPU of all SuperLinks and of PostgreSQL (the postmaster
 * and its backends, from /proc), SuperLink RSS, and the Fleet RPC rates. A throw-away PostgreSQL
 * server is started for the bench (src/cli/local-postgres.ts). Writes bench/results/replicas.json.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startLocalPostgres } from "../src/cli/local-postgres";
import { type SuperLinkChild, generateCredentials, scrapeMetrics, startSuperLinkChild } from "./lib/deployment";
import {
  type Child,
  REPO_ROOT,
  cpuSeconds,
  failOnExit,
  memoryInfo,
  say,
  sleep,
  startNodeScript,
  stopChildren,
} from "./lib/processes";

const NODES_PER_WORKER = 125;
const SETTLE_MS = 5_000;

interface CaseResult {
  replicas: number;
  nodes: number;
  registerSeconds: number;
  registrationsPerSecond: number;
  windowSeconds: number;
  superlinksCpuPercent: number;
  postgresCpuPercent: number;
  superlinkRssMiB: number[];
  fleetRpcPerSecond: number;
}

/** CPU seconds of the postmaster and its live children (the backends serving the replicas). */
function serverCpuSeconds(postmaster: number): number {
  let total = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(entry) === postmaster || Number(fields[1]) === postmaster)
        total += (Number(fields[11]) + Number(fields[12])) / 100;
    } catch {
      // the process ended meanwhile
    }
  }
  return total;
}

function fleetRpcs(metrics: Map<string, number>): number {
  let n = 0;
  for (const [key, value] of metrics) if (key.startsWith('flwr_superlink_rpcs_total{service="Fleet"')) n += value;
  return n;
}

function flagValue(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const n = Number(args[i + 1]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} needs a positive integer`);
  return n;
}

async function main(args: string[]): Promise<void> {
  const nodes = flagValue(args, "--nodes", 200);
  const windowSeconds = flagValue(args, "--idle-seconds", 20);
  const work = mkdtempSync(join(tmpdir(), "flwr-ts-bench-replicas-"));
  say(`replicas: generating ${nodes} SuperNode key pairs`);
  const creds = generateCredentials(nodes, work);
  const postgres = await startLocalPostgres();
  const results: CaseResult[] = [];
  try {
    for (const replicas of [1, 2]) {
      const dir = join(work, `replicas-${replicas}`);
      mkdirSync(dir, { recursive: true });
      const database = await postgres.createDatabase(`bench_${replicas}`);
      const children: Child[] = [];
      try {
        const links: SuperLinkChild[] = [];
        for (let r = 0; r < replicas; r++) {
          const link = await startSuperLinkChild(creds, dir, `superlink-${r}`, "tls+auth", ["--database", database]);
          links.push(link);
          children.push(link.child);
        }
        const startedAt = Date.now();
        const workers: Child[] = [];
        for (let first = 1, w = 0; first <= nodes; first += NODES_PER_WORKER, w++) {
          const target = links[w % links.length]!;
          workers.push(
            startNodeScript(`idle-worker-${w}`, join(__dirname, "idle-worker.js"), {
              logDir: dir,
              args: [
                "--superlink",
                target.fleetAddress,
                "--ca",
                creds.caCert,
                "--keys-dir",
                join(creds.dir, "keys"),
                "--first",
                String(first),
                "--count",
                String(Math.min(NODES_PER_WORKER, nodes - first + 1)),
              ],
            }),
          );
        }
        children.push(...workers);
        await Promise.race([
          Promise.all(
            workers.map((w) => w.waitForLog(`${w.name} ready`, (r) => r["event"] === "idle-worker.ready", 900_000)),
          ),
          failOnExit(children),
        ]);
        const registerSeconds = (Date.now() - startedAt) / 1000;
        say(
          `replicas=${replicas}: ${nodes} nodes registered in ${registerSeconds.toFixed(1)} s; measuring ${windowSeconds} s`,
        );
        await sleep(SETTLE_MS);
        const linkCpu0 = links.reduce((s, l) => s + cpuSeconds(l.child.pid), 0);
        const pgCpu0 = serverCpuSeconds(postgres.serverPid());
        const rpc0 = (await Promise.all(links.map((l) => scrapeMetrics(l.metricsAddress)))).reduce(
          (s, m) => s + fleetRpcs(m),
          0,
        );
        const t0 = Date.now();
        await Promise.race([sleep(windowSeconds * 1000), failOnExit(children)]);
        const elapsed = (Date.now() - t0) / 1000;
        const linkCpu = links.reduce((s, l) => s + cpuSeconds(l.child.pid), 0) - linkCpu0;
        const pgCpu = serverCpuSeconds(postgres.serverPid()) - pgCpu0;
        const rpc1 = (await Promise.all(links.map((l) => scrapeMetrics(l.metricsAddress)))).reduce(
          (s, m) => s + fleetRpcs(m),
          0,
        );
        results.push({
          replicas,
          nodes,
          registerSeconds,
          registrationsPerSecond: nodes / registerSeconds,
          windowSeconds: elapsed,
          superlinksCpuPercent: (100 * linkCpu) / elapsed,
          postgresCpuPercent: (100 * pgCpu) / elapsed,
          superlinkRssMiB: links.map((l) => memoryInfo(l.child.pid).rssMiB),
          fleetRpcPerSecond: (rpc1 - rpc0) / elapsed,
        });
      } finally {
        await stopChildren(children.slice(children.length - Math.ceil(nodes / NODES_PER_WORKER)), 20_000);
        await stopChildren(children);
      }
    }
  } finally {
    await postgres.stop();
    rmSync(work, { recursive: true, force: true });
  }
  const lines = [
    "replicas  nodes  register s  reg/s  SuperLinks CPU %  PostgreSQL CPU %  Fleet RPC/s  SuperLink RSS MiB",
    ...results.map(
      (r) =>
        `${String(r.replicas).padStart(8)}  ${String(r.nodes).padStart(5)}  ${r.registerSeconds.toFixed(1).padStart(10)}  ` +
        `${r.registrationsPerSecond.toFixed(1).padStart(5)}  ${r.superlinksCpuPercent.toFixed(1).padStart(16)}  ` +
        `${r.postgresCpuPercent.toFixed(1).padStart(16)}  ${r.fleetRpcPerSecond.toFixed(1).padStart(11)}  ${r.superlinkRssMiB.map((x) => x.toFixed(0)).join(" + ")}`,
    ),
  ];
  process.stdout.write(lines.join("\n") + "\n");
  const out = join(REPO_ROOT, "bench", "results");
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, "replicas.json"), JSON.stringify(results, null, 2) + "\n");
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`bench:replicas failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
