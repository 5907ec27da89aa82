/**
 * `npm run bench [-- SCENARIO... [options]]`: benchmarks of the real daemons (child processes
 * from bin/, TLS + node authentication from scripts/generate.sh, ports 127.0.0.1:0).
 * Scenarios: rounds, relay, fedavg, idle, hop, round1000 (default: all). Prints a table per scenario on stdout and
 * writes bench/results/latest.json. See bench/README.md.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, freemem, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { generateCredentials } from "./lib/deployment";
import { REPO_ROOT, say, setDaemonNodeFlags } from "./lib/processes";
import { type FedAvgCase, type FedAvgResult, runFedAvg } from "./scenarios/fedavg";
import { type HopResult, runHop } from "./scenarios/hop";
import { type IdleResult, runIdle } from "./scenarios/idle";
import { type RelayCase, type RelayResult, runRelay } from "./scenarios/relay";
import { type RoundsResult, runRounds } from "./scenarios/rounds";
import { type Round1000Result, runRound1000 } from "./scenarios/round1000";

const SCENARIOS = ["rounds", "relay", "fedavg", "idle", "hop", "round1000"] as const;
type Scenario = (typeof SCENARIOS)[number];

interface Options {
  scenarios: Scenario[];
  rounds: number;
  relayCases: RelayCase[];
  fedavgCases: FedAvgCase[];
  fedavgRounds: number;
  idleNodes: number;
  idleSeconds: number;
  roundNodes: number;
  hopMB: number;
  keep: boolean;
  output: string;
  /** A generate.sh variant (same arguments), e.g. an older one, to compare certificate choices. */
  credentialsScript?: string;
  /** Directory for V8 CPU profiles of every daemon (node --cpu-prof). */
  profileDir?: string;
}

const USAGE = `Usage: npm run bench -- [rounds] [relay] [fedavg] [idle] [hop] [round1000] [options]
  (no scenario = all six)
  --rounds N           FedAvg rounds in "rounds" (default 3)
  --relay-cases LIST   payload MB x nodes for "relay", TLS + auth unless ":tls" (TLS, no
                       node auth) or ":plain" (plaintext, no auth) follows
                       (default 10x2,10x10,100x2,100x10,100x2:plain)
  --fedavg-cases LIST  payload MB x nodes for "fedavg", a FedAvg round with aggregation
                       (default 100x10)
  --fedavg-rounds N    rounds of each "fedavg" case (default 1)
  --nodes N            idle SuperNodes in "idle" (default 100; e.g. 1000)
  --idle-seconds S     measuring window of "idle" (default 30)
  --round-nodes N      SuperNodes in "round1000", FedAvg rounds (--rounds) over N nodes
                       (default 1000)
  --hop-mb N           payload of "hop", one gRPC upload between two processes (default 100)
  --output FILE        where the JSON results go (default bench/results/latest.json)
  --credentials-script FILE  make certificates and keys with FILE instead of scripts/generate.sh
                       (same arguments; e.g. an older version, to compare)
  --keep               keep the temp dir (certificates, apps, child logs)
  --profile DIR        write a V8 CPU profile of every daemon into DIR (open in Chrome DevTools)`;

function positiveInt(flag: string, value: string | undefined): number {
  const n = Number(value);
  if (value === undefined || !Number.isInteger(n) || n < 1)
    throw new Error(`${flag} needs a positive integer, got ${value ?? "nothing"}`);
  return n;
}

function parseArgs(args: string[]): Options {
  const opts: Options = {
    scenarios: [],
    rounds: 3,
    relayCases: [
      { payloadMB: 10, nodes: 2, security: "tls+auth" },
      { payloadMB: 10, nodes: 10, security: "tls+auth" },
      { payloadMB: 100, nodes: 2, security: "tls+auth" },
      { payloadMB: 100, nodes: 10, security: "tls+auth" },
      { payloadMB: 100, nodes: 2, security: "plaintext" },
    ],
    fedavgCases: [{ payloadMB: 100, nodes: 10 }],
    fedavgRounds: 1,
    idleNodes: 100,
    idleSeconds: 30,
    roundNodes: 1000,
    hopMB: 100,
    keep: false,
    output: join(REPO_ROOT, "bench", "results", "latest.json"),
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const next = (): string | undefined => args[++i];
    switch (arg) {
      case "--rounds":
        opts.rounds = positiveInt(arg, next());
        break;
      case "--nodes":
        opts.idleNodes = positiveInt(arg, next());
        break;
      case "--idle-seconds":
        opts.idleSeconds = positiveInt(arg, next());
        break;
      case "--round-nodes":
        opts.roundNodes = positiveInt(arg, next());
        break;
      case "--hop-mb":
        opts.hopMB = positiveInt(arg, next());
        break;
      case "--relay-cases": {
        const list = next() ?? "";
        opts.relayCases = list.split(",").map((item) => {
          const m = /^(\d+)x(\d+)(?::(plain|tls))?$/.exec(item.trim());
          if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) {
            throw new Error(`--relay-cases: "${item}" is not MBxNODES[:tls|:plain], e.g. 100x10 or 100x2:plain`);
          }
          const security = m[3] === "plain" ? "plaintext" : m[3] === "tls" ? "tls" : "tls+auth";
          return { payloadMB: Number(m[1]), nodes: Number(m[2]), security };
        });
        break;
      }
      case "--fedavg-cases": {
        const list = next() ?? "";
        opts.fedavgCases = list.split(",").map((item) => {
          const m = /^(\d+)x(\d+)$/.exec(item.trim());
          if (!m || Number(m[1]) < 1 || Number(m[2]) < 1)
            throw new Error(`--fedavg-cases: "${item}" is not MBxNODES, e.g. 100x10`);
          return { payloadMB: Number(m[1]), nodes: Number(m[2]) };
        });
        break;
      }
      case "--fedavg-rounds":
        opts.fedavgRounds = positiveInt(arg, next());
        break;
      case "--output":
        opts.output = next() ?? "";
        if (opts.output === "") throw new Error("--output needs a file name");
        break;
      case "--credentials-script": {
        const script = next();
        if (script === undefined || script === "") throw new Error("--credentials-script needs a file");
        opts.credentialsScript = resolve(script);
        break;
      }
      case "--keep":
        opts.keep = true;
        break;
      case "--profile": {
        const dir = next();
        if (dir === undefined || dir === "") throw new Error("--profile needs a directory");
        opts.profileDir = resolve(dir);
        break;
      }
      case "-h":
      case "--help":
        process.stdout.write(USAGE + "\n");
        process.exit(0);
        break;
      default:
        if ((SCENARIOS as readonly string[]).includes(arg)) {
          if (!opts.scenarios.includes(arg as Scenario)) opts.scenarios.push(arg as Scenario);
        } else {
          throw new Error(`unknown argument "${arg}"\n${USAGE}`);
        }
    }
  }
  if (opts.scenarios.length === 0) opts.scenarios = [...SCENARIOS];
  return opts;
}

/** A fixed-width text table. */
function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i]!)).join("  ");
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

const f = (x: number | undefined, digits = 2): string => (x === undefined ? "-" : x.toFixed(digits));

function roundsTable(r: RoundsResult): string {
  const rows = r.roundSeconds.map((s, i) => [`round ${i + 1}`, f(s, 3)]);
  rows.unshift(["init (get_parameters)", f(r.initSeconds, 3)]);
  rows.push(
    [
      "all rounds",
      f(
        r.roundSeconds.reduce((a, b) => a + b, 0),
        3,
      ),
    ],
    ["run ([INIT] to summary)", f(r.runSeconds, 3)],
    ["flower-server-app process", f(r.serverAppProcessSeconds, 3)],
    ["SuperLink CPU during run", f(r.superlinkCpuSeconds, 3)],
  );
  return `rounds: ${r.rounds}-round FedAvg, ${r.nodes} SuperNodes, TLS + auth\n` + table(["phase", "seconds"], rows);
}

function relayTable(results: RelayResult[]): string {
  const rows = results.map((r) =>
    r.skipped !== undefined
      ? [`${r.payloadMB} MB`, String(r.nodes), r.security, `skipped: ${r.skipped}`, "", "", "", "", "", "", "", "", ""]
      : [
          `${r.payloadMB} MB`,
          String(r.nodes),
          r.security,
          f(r.allPushedSeconds),
          f(r.roundTripSeconds),
          f(r.throughputMBps, 0),
          f(r.superlinkRssBeforeMiB, 0),
          f(r.superlinkPeakRssMiB, 0),
          f(r.supernodePeakRssMiB, 0),
          f(r.serverAppPeakRssMiB, 0),
          f(r.superlinkCpuSeconds),
          f(r.supernodesCpuSeconds),
          f(r.serverAppCpuSeconds),
        ],
  );
  return (
    "relay: one message with the payload to every node, echoed back (Message API ServerApp)\n" +
    table(
      [
        "payload",
        "nodes",
        "security",
        "all pushed s",
        "round trip s",
        "MB/s",
        "link RSS before MiB",
        "link peak RSS MiB",
        "node peak RSS MiB",
        "app peak RSS MiB",
        "link CPU s",
        "nodes CPU s",
        "app CPU s",
      ],
      rows,
    )
  );
}

/** Goals of issue 19, printed beside the measurements. */
const GOAL_SERVERAPP_RSS_MIB = 400;
const GOAL_SUPERLINK_RSS_MIB = 400;
const GOAL_REGISTRATIONS_PER_SECOND = 300;

function fedavgTable(results: FedAvgResult[]): string {
  const goal = (v: number | undefined, max: number): string =>
    v === undefined ? "-" : `${f(v, 0)} (goal <= ${max}${v <= max ? ", met" : ", NOT met"})`;
  const rows = results.map((r) =>
    r.skipped !== undefined
      ? [`${r.payloadMB} MB`, String(r.nodes), `skipped: ${r.skipped}`, "", "", "", ""]
      : [
          `${r.payloadMB} MB`,
          String(r.nodes),
          `${(r.roundSeconds ?? []).map((s) => f(s)).join(" / ")}${r.failures ? ` (${r.failures} failures)` : ""}`,
          goal(r.serverAppPeakRssMiB, GOAL_SERVERAPP_RSS_MIB),
          goal(r.superlinkPeakRssMiB, GOAL_SUPERLINK_RSS_MIB),
          f(r.supernodePeakRssMiB, 0),
          f(r.superlinkCpuSeconds),
        ],
  );
  return (
    "fedavg: legacy FedAvg, fit on every node and aggregation (TLS + auth)\n" +
    table(
      ["payload", "nodes", "round s", "app peak RSS MiB", "link peak RSS MiB", "node peak RSS MiB", "link CPU s"],
      rows,
    )
  );
}

/** Issue 19: 10,000 idle authenticated SuperNodes under 1 core and 1 GiB. */
const IDLE_GOAL_NODES = 10_000;

/** Measured at the goal's node count, or extrapolated linearly from the per-node cost. */
function idleGoalText(r: IdleResult): string {
  const scale = IDLE_GOAL_NODES / r.nodes;
  const cpu = r.superlinkCpuPercent * scale;
  const rss = r.superlinkRssIdleMiB + (r.superlinkRssMiB - r.superlinkRssIdleMiB) * scale;
  const met = cpu <= 100 && rss <= 1024;
  return `${r.nodes === IDLE_GOAL_NODES ? "" : "~"}${f(cpu, 0)} % of one core, ${f(rss, 0)} MiB${r.nodes === IDLE_GOAL_NODES ? "" : " (extrapolated)"}, ${met ? "met" : "NOT met"}`;
}

function idleTable(r: IdleResult): string {
  const rates = Object.entries(r.rpcPerSecond)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k} ${v.toFixed(1)}/s`)
    .join(", ");
  const rows = [
    ["SuperNodes (online per SuperLink)", `${r.nodes} (${r.onlineNodes})`],
    ["worker processes", String(r.workers)],
    ["registration of all nodes", `${f(r.registerSeconds, 1)} s`],
    [
      "registrations per second",
      `${f(r.registrationsPerSecond, 0)}/s (goal >= ${GOAL_REGISTRATIONS_PER_SECOND}${r.registrationsPerSecond >= GOAL_REGISTRATIONS_PER_SECOND ? ", met" : ", NOT met"})`,
    ],
    ["SuperLink CPU per registration", `${f(r.superlinkCpuMsPerRegistration, 1)} ms`],
    ["window", `${f(r.windowSeconds, 1)} s`],
    ["SuperLink CPU", `${f(r.superlinkCpuPercent, 1)} % of one core`],
    ["SuperLink RSS idle, no nodes", `${f(r.superlinkRssIdleMiB, 0)} MiB`],
    ["SuperLink RSS with nodes", `${f(r.superlinkRssMiB, 0)} MiB (peak ${f(r.superlinkPeakRssMiB, 0)} MiB)`],
    ["SuperLink JS heap used / external", `${f(r.superlinkHeapUsedMiB, 0)} / ${f(r.superlinkExternalMiB, 0)} MiB`],
    [
      "per node: SuperLink CPU, RSS",
      `${f((10 * r.superlinkCpuPercent) / r.nodes, 3)} ms/s, ${f((1024 * (r.superlinkRssMiB - r.superlinkRssIdleMiB)) / r.nodes, 0)} KiB`,
    ],
    [`at ${IDLE_GOAL_NODES} nodes (goal <= 1 core, <= 1024 MiB)`, idleGoalText(r)],
    ["Fleet RPCs", rates],
    ["workers' CPU (all nodes together)", `${f(r.workersCpuPercent, 1)} % of one core`],
    ["workers' RSS (all together)", `${f(r.workersRssMiB, 0)} MiB`],
  ];
  return `idle: ${r.nodes} idle authenticated SuperNodes\n` + table(["measure", "value"], rows);
}

/** Issue 19: a round over 1,000 nodes with a tiny model in under 5 s. */
const GOAL_ROUND1000_SECONDS = 5;

function round1000Table(r: Round1000Result): string {
  const sorted = [...r.roundSeconds].sort((a, b) => a - b);
  const median = sorted[Math.floor((sorted.length - 1) / 2)] ?? NaN;
  const goal =
    r.nodes === 1000
      ? `goal < ${GOAL_ROUND1000_SECONDS} s at 1000 nodes, ${median < GOAL_ROUND1000_SECONDS ? "met" : "NOT met"}`
      : "";
  const rows = [
    ["registration of all nodes", f(r.registerSeconds, 1), ""],
    ["[INIT] (initial parameters from one node)", f(r.initSeconds, 3), ""],
    ...r.roundSeconds.map((s, i) => [`round ${i + 1} (fit + evaluate on all)`, f(s, 3), ""]),
    ["median round", f(median, 3), goal],
    ["SuperLink CPU over the run", f(r.superlinkCpuSeconds, 2), ""],
    ["workers' CPU over the run (all nodes)", f(r.workersCpuSeconds, 2), ""],
  ];
  return (
    `round1000: FedAvg rounds over ${r.nodes} authenticated SuperNodes (${r.workers} worker processes), tiny model\n` +
    table(["phase", "seconds", "goal"], rows)
  );
}

function hopTable(results: HopResult[]): string {
  const rows = results.map((r) => [
    `${r.payloadMB} MB`,
    r.security,
    f(r.medianSeconds, 3),
    f(r.firstSeconds, 3),
    f(r.senderCpuMs, 0),
    f(r.receiverUserMs, 0),
    f(r.receiverSystemMs, 0),
  ]);
  return (
    "hop: one unary gRPC upload between two processes, no protobuf (medians after the first call)\n" +
    table(["payload", "security", "seconds", "first s", "sender CPU ms", "receiver user ms", "receiver sys ms"], rows)
  );
}

function gitCommit(): string | undefined {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: REPO_ROOT, encoding: "utf8" }).trim();
  } catch {
    return undefined;
  }
}

async function main(args: string[]): Promise<number> {
  const opts = parseArgs(args);
  for (const built of [
    "cli/flower-superlink.js",
    "cli/flower-client-app.js",
    "cli/flower-server-app.js",
    "client/index.js",
    "server/index.js",
  ]) {
    if (!existsSync(join(REPO_ROOT, "dist", built)))
      throw new Error(`dist/${built} is missing: run \`npm run build\` first`);
  }
  if (opts.profileDir !== undefined) {
    mkdirSync(opts.profileDir, { recursive: true });
    setDaemonNodeFlags(["--cpu-prof", `--cpu-prof-dir=${opts.profileDir}`]);
  }
  const workDir = mkdtempSync(join(tmpdir(), "flwr-bench-"));
  const results: Record<string, unknown> = {
    startedAt: new Date().toISOString(),
    commit: gitCommit(),
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      totalMemMiB: Math.round(totalmem() / 2 ** 20),
      freeMemMiB: Math.round(freemem() / 2 ** 20),
      node: process.version,
    },
  };
  const texts: string[] = [];
  let failed = false;
  try {
    const keyPairs = Math.max(
      opts.scenarios.includes("rounds") ? 2 : 1,
      opts.scenarios.includes("relay") ? Math.max(...opts.relayCases.map((c) => c.nodes)) : 1,
      opts.scenarios.includes("fedavg") ? Math.max(...opts.fedavgCases.map((c) => c.nodes)) : 1,
      opts.scenarios.includes("idle") ? opts.idleNodes : 1,
      opts.scenarios.includes("round1000") ? opts.roundNodes : 1,
    );
    say(`generating certificates and ${keyPairs} SuperNode key pair(s) in ${workDir}`);
    const creds = generateCredentials(keyPairs, join(workDir, "credentials"), opts.credentialsScript);
    for (const scenario of opts.scenarios) {
      const started = Date.now();
      say(`scenario ${scenario}: starting`);
      try {
        if (scenario === "rounds") {
          const r = await runRounds(creds, workDir, { numRounds: opts.rounds, numNodes: 2 });
          results["rounds"] = r;
          texts.push(roundsTable(r));
        } else if (scenario === "relay") {
          const r = await runRelay(creds, workDir, opts.relayCases);
          results["relay"] = r;
          texts.push(relayTable(r));
        } else if (scenario === "fedavg") {
          const r = await runFedAvg(creds, workDir, opts.fedavgCases, opts.fedavgRounds);
          results["fedavg"] = r;
          texts.push(fedavgTable(r));
        } else if (scenario === "idle") {
          const r = await runIdle(creds, workDir, { nodes: opts.idleNodes, windowSeconds: opts.idleSeconds });
          results["idle"] = r;
          texts.push(idleTable(r));
        } else if (scenario === "round1000") {
          const r = await runRound1000(creds, workDir, { nodes: opts.roundNodes, rounds: opts.rounds });
          results["round1000"] = r;
          texts.push(round1000Table(r));
        } else {
          const r = await runHop(creds, workDir, opts.hopMB);
          results["hop"] = r;
          texts.push(hopTable(r));
        }
      } catch (err) {
        failed = true;
        const message = err instanceof Error ? err.message : String(err);
        results[scenario] = { error: message };
        texts.push(`${scenario}: FAILED: ${message}`);
        say(`scenario ${scenario} failed: ${message}`);
        opts.keep = true;
      }
      say(`scenario ${scenario}: done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
  } finally {
    if (opts.keep) say(`kept ${workDir} (certificates, apps, child logs)`);
    else rmSync(workDir, { recursive: true, force: true });
  }
  results["finishedAt"] = new Date().toISOString();
  mkdirSync(join(opts.output, ".."), { recursive: true });
  writeFileSync(opts.output, JSON.stringify(results, null, 2) + "\n");
  process.stdout.write("\n" + texts.join("\n\n") + "\n\n");
  say(`results written to ${opts.output}`);
  return failed ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  },
);
