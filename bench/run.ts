/**
 * `npm run bench [-- SCENARIO... [options]]`: benchmarks of the real daemons (child processes
 * from bin/, TLS + node authentication from scripts/generate.sh, ports 127.0.0.1:0).
 * Scenarios: rounds, relay, fedavg, idle, hop, handshake, train, round1000 (default: all); each case repeated (--repeat N), medians printed,
 * and a table of the issue 19 goals (bench/lib/goals.ts) at the end. Prints a table per scenario on stdout and
 * writes bench/results/latest.json. See bench/README.md.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, freemem, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { generateCredentials } from "./lib/deployment";
import { REPO_ROOT, say, setDaemonNodeFlags } from "./lib/processes";
import { GOAL_HEADERS, type GoalRow, goalCells, goalRows } from "./lib/goals";
import { type Repeated, type Summary, formatSummary } from "./lib/stats";
import { DEFAULT_FEDAVG_REPEAT, type FedAvgCase, type FedAvgCaseResult, runFedAvg } from "./scenarios/fedavg";
import { DEFAULT_HANDSHAKE_REPEAT, type HandshakeRuns, runHandshake } from "./scenarios/handshake";
import { DEFAULT_HOP_REPEAT, type HopResult, runHop } from "./scenarios/hop";
import { DEFAULT_IDLE_REPEAT, type IdleResult, runIdleRepeated, warmBatchNodes } from "./scenarios/idle";
import { type RelayCase, type RelayCaseResult, defaultRelayRepeat, runRelay } from "./scenarios/relay";
import {
  DEFAULT_TRAIN_REPEAT,
  TRAIN_BACKENDS,
  type TrainBackend,
  type TrainBackendResult,
  runTrain,
} from "./scenarios/train";
import { DEFAULT_ROUNDS_REPEAT, type RoundsResult, runRoundsRepeated } from "./scenarios/rounds";
import {
  DEFAULT_ROUND1000_REPEAT,
  DEFAULT_ROUND1000_ROUNDS,
  type Round1000Result,
  runRound1000Repeated,
} from "./scenarios/round1000";

const SCENARIOS = ["rounds", "relay", "fedavg", "idle", "hop", "handshake", "train", "round1000"] as const;
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
  roundRounds: number;
  hopMB: number;
  trainBackends: TrainBackend[];
  /** Runs of every case (--repeat); undefined = each scenario's default. */
  repeat?: number;
  keep: boolean;
  output: string;
  /** A generate.sh variant (same arguments), e.g. an older one, to compare certificate choices. */
  credentialsScript?: string;
  /** Directory for V8 CPU profiles of every daemon (node --cpu-prof). */
  profileDir?: string;
}

const USAGE = `Usage: npm run bench -- [rounds] [relay] [fedavg] [idle] [hop] [handshake] [train] [round1000] [options]
  (no scenario = all eight)
  --rounds N           FedAvg rounds in "rounds" (default 3)
  --relay-cases LIST   payload MB x nodes for "relay", TLS + auth unless ":tls" (TLS, no
                       node auth) or ":plain" (plaintext, no auth) follows
                       (default 10x2,10x10,100x2,100x10,100x2:plain)
  --fedavg-cases LIST  payload MB x nodes for "fedavg", a FedAvg round with aggregation
                       (default 100x10)
  --fedavg-rounds N    rounds of each "fedavg" case (default 1)
  --nodes N            idle SuperNodes in "idle" (default 100; e.g. 1000)
  --idle-seconds S     measuring window of "idle" (default 30)
  --round-nodes N      SuperNodes in "round1000", FedAvg rounds over N in-process nodes
                       (default 1000)
  --round-rounds N     rounds per run of "round1000" (default 10; each round is a sample)
  --hop-mb N           payload of "hop", one gRPC upload between two processes (default 100)
  --train-backends L   TensorFlow.js backends of "train", the example's default fit
                       (default cpu,wasm,tfjs-node; one not installed is listed as such)
  --repeat N           runs of every case (fresh daemons each); tables print median [min-max]
                       and n. Defaults: rounds 10; relay 10 for 100x2 (TLS + auth), 3 when
                       MB x nodes >= 1000, else 5; fedavg 1; idle 1 (CPU and RSS medians over
                       the window's 1 s samples); hop 10 calls after a warm-up; handshake 5
                       runs of 300 connections; train 10
                       fits per backend after a warm-up fit
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
    roundRounds: DEFAULT_ROUND1000_ROUNDS,
    hopMB: 100,
    trainBackends: [...TRAIN_BACKENDS],
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
      case "--train-backends":
        opts.trainBackends = (next() ?? "").split(",").map((name) => {
          const backend = TRAIN_BACKENDS.find((b) => b === name.trim());
          if (backend === undefined)
            throw new Error(`--train-backends: "${name}" is not one of ${TRAIN_BACKENDS.join(", ")}`);
          return backend;
        });
        break;
      case "--round-nodes":
        opts.roundNodes = positiveInt(arg, next());
        break;
      case "--round-rounds":
        opts.roundRounds = positiveInt(arg, next());
        break;
      case "--repeat":
        opts.repeat = positiveInt(arg, next());
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

/** A fixed-width text table; the columns in `left` are left-aligned, the others right-aligned. */
function table(headers: string[], rows: string[][], left: readonly number[] = [0]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (left.includes(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

const f = (x: number | undefined, digits = 2): string => (x === undefined ? "-" : x.toFixed(digits));
/** A summarized figure: "median [min-max]". */
const m = (summary: Record<string, Summary>, key: string, digits = 2): string => formatSummary(summary[key], digits);
const MEDIANS = "medians [min-max] over the runs";

function roundsTable(r: Repeated<RoundsResult>, rounds: number): string {
  const s = r.summary;
  const rows = Array.from({ length: rounds }, (_, i) => [`round ${i + 1}`, m(s, `round ${i + 1}`, 3)]);
  rows.unshift(["init (get_parameters)", m(s, "initSeconds", 3)]);
  rows.push(
    ["all rounds", m(s, "all rounds", 3)],
    ["run ([INIT] to summary)", m(s, "runSeconds", 3)],
    ["flower-server-app process", m(s, "serverAppProcessSeconds", 3)],
    ["SuperLink CPU during run", m(s, "superlinkCpuSeconds", 3)],
  );
  return (
    `rounds: ${rounds}-round FedAvg, 2 SuperNodes, TLS + auth; ${MEDIANS} (n = ${r.runs.length}, fresh daemons each)\n` +
    table(["phase", "seconds"], rows)
  );
}

function relayTable(results: RelayCaseResult[]): string {
  const rows = results.map((r) =>
    r.skipped !== undefined
      ? [`${r.payloadMB} MB`, String(r.nodes), r.security, "0", `skipped: ${r.skipped}`]
      : [
          `${r.payloadMB} MB`,
          String(r.nodes),
          r.security,
          String(r.runs.length),
          m(r.summary, "allPushedSeconds"),
          m(r.summary, "roundTripSeconds"),
          m(r.summary, "throughputMBps", 0),
          m(r.summary, "superlinkRssBeforeMiB", 0),
          m(r.summary, "superlinkPeakRssMiB", 0),
          m(r.summary, "supernodePeakRssMiB", 0),
          m(r.summary, "serverAppPeakRssMiB", 0),
          m(r.summary, "superlinkCpuSeconds"),
          m(r.summary, "supernodesCpuSeconds"),
          m(r.summary, "serverAppCpuSeconds"),
        ],
  );
  return (
    `relay: one message with the payload to every node, echoed back (Message API ServerApp); ${MEDIANS} (n runs, fresh daemons each)\n` +
    table(
      [
        "payload",
        "nodes",
        "security",
        "n",
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

function fedavgTable(results: FedAvgCaseResult[]): string {
  const rows = results.map((r) =>
    r.skipped !== undefined
      ? [`${r.payloadMB} MB`, String(r.nodes), "0", `skipped: ${r.skipped}`]
      : [
          `${r.payloadMB} MB`,
          String(r.nodes),
          String(r.runs.length),
          Array.from({ length: r.rounds }, (_, i) => m(r.summary, `round ${i + 1}`)).join(" / "),
          m(r.summary, "failures", 0),
          m(r.summary, "serverAppPeakRssMiB", 0),
          m(r.summary, "superlinkPeakRssMiB", 0),
          m(r.summary, "supernodePeakRssMiB", 0),
          m(r.summary, "superlinkCpuSeconds"),
        ],
  );
  return (
    `fedavg: legacy FedAvg, fit on every node and aggregation (TLS + auth); ${MEDIANS} (n runs, fresh daemons each)\n` +
    table(
      [
        "payload",
        "nodes",
        "n",
        "round s",
        "fit failures",
        "app peak RSS MiB",
        "link peak RSS MiB",
        "node peak RSS MiB",
        "link CPU s",
      ],
      rows,
    )
  );
}

function idleTable(r: Repeated<IdleResult>): string {
  const s = r.summary;
  const last = r.runs[r.runs.length - 1];
  const rates = Object.entries(last?.rpcPerSecond ?? {})
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k} ${v.toFixed(1)}/s`)
    .join(", ");
  const cpuSamples = s["superlinkCpuPercentPerSecond"]?.n ?? 0;
  const rows = [
    ["SuperNodes (online per SuperLink)", `${last?.nodes ?? "-"} (${m(s, "onlineNodes", 0)})`],
    ["worker processes", String(last?.workers ?? "-")],
    ["registration of all nodes, s", m(s, "registerSeconds", 1)],
    ["registrations per second", m(s, "registrationsPerSecond", 0)],
    ["SuperLink CPU per registration, ms", m(s, "superlinkCpuMsPerRegistration", 1)],
    ["one core's ceiling, 1000 / SuperLink ms per registration, /s", m(s, "superlinkRegistrationCeilingPerSecond", 0)],
    ["SuperLink main thread (event loop) CPU per registration, ms", m(s, "superlinkMainThreadMsPerRegistration", 1)],
    ["event loop's ceiling, 1000 / main thread ms per registration, /s", m(s, "superlinkEventLoopCeilingPerSecond", 0)],
    ["SuperNodes' CPU per registration (workers), ms", m(s, "workersCpuMsPerRegistration", 1)],
    ["warm SuperLink, a second batch: registrations per second", m(s, "warmRegistrationsPerSecond", 0)],
    ["warm: SuperLink CPU per registration, ms", m(s, "warmSuperlinkCpuMsPerRegistration", 1)],
    ["warm: one core's ceiling, /s", m(s, "warmSuperlinkRegistrationCeilingPerSecond", 0)],
    ["warm: SuperLink main thread CPU per registration, ms", m(s, "warmSuperlinkMainThreadMsPerRegistration", 1)],
    ["warm: event loop's ceiling, /s", m(s, "warmSuperlinkEventLoopCeilingPerSecond", 0)],
    ["warm: SuperNodes' CPU per registration (new workers), ms", m(s, "warmWorkersCpuMsPerRegistration", 1)],
    ["window, s", m(s, "windowSeconds", 1)],
    ["SuperLink CPU, % of one core (whole window)", m(s, "superlinkCpuPercent", 1)],
    [`SuperLink CPU, % of one core (${cpuSamples} 1 s samples)`, m(s, "superlinkCpuPercentPerSecond", 1)],
    ["SuperLink RSS idle, no nodes, MiB", m(s, "superlinkRssIdleMiB", 0)],
    [`SuperLink RSS with nodes, MiB (1 s samples)`, m(s, "superlinkRssMiBPerSecond", 0)],
    ["SuperLink peak RSS, MiB", m(s, "superlinkPeakRssMiB", 0)],
    ["Fleet RPCs (last run)", rates],
    [
      "SuperLink JS heap used / external, MiB",
      `${m(s, "superlinkHeapUsedMiB", 0)} / ${m(s, "superlinkExternalMiB", 0)}`,
    ],
    ["per node: SuperLink CPU ms/s, RSS KiB", last === undefined ? "-" : perNodeText(last)],
    [`at ${IDLE_GOAL_NODES} nodes (goal < 1 core, < 1024 MiB)`, last === undefined ? "-" : idleGoalText(last)],
    ["workers' CPU, % of one core (all nodes)", m(s, "workersCpuPercent", 1)],
    ["workers' RSS, MiB (all together)", m(s, "workersRssMiB", 0)],
  ];
  return (
    `idle: ${last?.nodes ?? "-"} idle authenticated SuperNodes; medians [min-max] over ${r.runs.length} run(s), CPU and RSS over 1 s samples\n` +
    table(["measure", "value"], rows)
  );
}

/** Issue 19: 10,000 idle authenticated SuperNodes under 1 core and 1 GiB. */
const IDLE_GOAL_NODES = 10_000;

function perNodeText(r: IdleResult): string {
  const rssKiB = (1024 * (r.superlinkRssMiB - r.superlinkRssIdleMiB)) / r.nodes;
  return `${f((10 * r.superlinkCpuPercent) / r.nodes, 3)}, ${f(rssKiB, 0)} (last run)`;
}

/** Measured at the goal's node count, or extrapolated linearly from the per-node cost (last run). */
function idleGoalText(r: IdleResult): string {
  if (r.nodes >= IDLE_GOAL_NODES) return "measured: see the goals table";
  const scale = IDLE_GOAL_NODES / r.nodes;
  const cpu = r.superlinkCpuPercent * scale;
  const rss = r.superlinkRssIdleMiB + (r.superlinkRssMiB - r.superlinkRssIdleMiB) * scale;
  return `~${f(cpu, 0)} % of one core, ${f(rss, 0)} MiB (extrapolated)`;
}

function round1000Table(r: Repeated<Round1000Result>): string {
  const s = r.summary;
  const last = r.runs[r.runs.length - 1];
  const rows = [
    ["registration of all nodes, s", m(s, "registerSeconds", 1)],
    ["[INIT] (initial parameters from one node), s", m(s, "initSeconds", 3)],
    [`round (fit + evaluate on all), s (${s["roundSeconds"]?.n ?? 0} rounds)`, m(s, "roundSeconds", 3)],
    ["rounds of the last run, s", last === undefined ? "-" : last.roundSeconds.map((x) => f(x, 2)).join(" ")],
    ["SuperLink CPU over a run, s", m(s, "superlinkCpuSeconds", 2)],
    ["workers' CPU over a run (all nodes), s", m(s, "workersCpuSeconds", 2)],
  ];
  return (
    `round1000: FedAvg rounds over ${last?.nodes ?? "-"} authenticated SuperNodes in ${last?.workers ?? "-"} worker processes, ` +
    `tiny model; ${MEDIANS} (n = ${r.runs.length})\n` +
    table(["measure", "value"], rows)
  );
}

function hopTable(results: HopResult[]): string {
  const rows = results.map((r) => [
    `${r.payloadMB} MB`,
    r.stack === "node:http2" ? `${r.security}, node:http2 only` : r.security,
    String(r.seconds.n),
    formatSummary(r.seconds, 3),
    f(r.firstSeconds, 3),
    formatSummary(r.senderCpuMs, 0),
    formatSummary(r.receiverUserMs, 0),
    formatSummary(r.receiverSystemMs, 0),
  ]);
  return (
    "hop: one unary gRPC upload between two processes, no protobuf; medians [min-max] of n calls after a warm-up call\n" +
    table(
      ["payload", "security", "n", "seconds", "first s", "sender CPU ms", "receiver user ms", "receiver sys ms"],
      rows,
    )
  );
}

function handshakeTable(r: HandshakeRuns): string {
  const s = r.summary;
  const rows = [
    ["connections per run", String(r.runs[0]?.connections ?? "-")],
    ["connections per second (both ends on this machine)", formatSummary(s.perSecond, 0)],
    ["client CPU per connection (the SuperNodes' side), ms", formatSummary(s.clientCpuMs, 2)],
    ["server CPU per connection (the SuperLink's side), ms", formatSummary(s.serverCpuMs, 2)],
    ["ceiling, 1000 x cores / (client + server ms), /s", formatSummary(s.ceilingPerSecond, 0)],
  ];
  return (
    "handshake: the floor under a registration on bare node:http2 (fresh TLS connection, two small POSTs, " +
    `the client's P-384 ECDH; no gRPC, none of our code); ${MEDIANS} (n = ${r.runs.length})\n` +
    table(["measure", "value"], rows)
  );
}

function trainTable(results: TrainBackendResult[]): string {
  const rounds = Math.max(0, ...results.map((r) => r.rounds.length));
  const shown = [1, 3, rounds].filter((x, i, all) => x <= rounds && all.indexOf(x) === i);
  const rows = results.map((r) =>
    r.unavailable !== undefined
      ? [r.backend, "0", `not available: ${r.unavailable}`]
      : [
          r.backend,
          String(r.fitSeconds?.n ?? 0),
          formatSummary(r.fitSeconds),
          formatSummary(r.fitCpuSeconds),
          f(r.warmupFitSeconds),
          formatSummary(r.evaluateSeconds, 3),
          ...shown.map((k) => {
            const round = r.rounds[k - 1];
            return round === undefined ? "-" : `${f(round.trainAccuracy, 3)} / ${f(round.testAccuracy, 3)}`;
          }),
          f(r.maxAccuracyDiffFromCpu, 3),
          f(r.lastRoundAccuracyDiffFromCpu, 3),
        ],
  );
  return (
    "train: the example's default fit (400 images, 1 epoch, batch 16) and evaluation (200 images) per backend; " +
    "medians [min-max] of n fits after a warm-up fit, rounds in a row from the same seeds\n" +
    table(
      [
        "backend",
        "n",
        "fit s",
        "fit CPU s",
        "warm-up fit s",
        "evaluate s",
        ...shown.map((k) => `round ${k} train / test acc`),
        "max |test acc - cpu| rounds 1-3",
        "last round |test acc - cpu|",
      ],
      rows,
    )
  );
}

function goalsTable(rows: GoalRow[]): string {
  return (
    "goals of issue 19: median [min-max] of n samples against the target\n" +
    table(GOAL_HEADERS, goalCells(rows), [0, 4, 5, 6])
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
      opts.scenarios.includes("idle") ? opts.idleNodes + warmBatchNodes(opts.idleNodes) : 1,
      opts.scenarios.includes("round1000") ? opts.roundNodes : 1,
    );
    say(`generating certificates and ${keyPairs} SuperNode key pair(s) in ${workDir}`);
    const creds = generateCredentials(keyPairs, join(workDir, "credentials"), opts.credentialsScript);
    for (const scenario of opts.scenarios) {
      const started = Date.now();
      say(`scenario ${scenario}: starting`);
      try {
        if (scenario === "rounds") {
          const times = opts.repeat ?? DEFAULT_ROUNDS_REPEAT;
          const r = await runRoundsRepeated(creds, workDir, { numRounds: opts.rounds, numNodes: 2 }, times);
          results["rounds"] = r;
          texts.push(roundsTable(r, opts.rounds));
        } else if (scenario === "relay") {
          const r = await runRelay(creds, workDir, opts.relayCases, (c) => opts.repeat ?? defaultRelayRepeat(c));
          results["relay"] = r;
          texts.push(relayTable(r));
        } else if (scenario === "fedavg") {
          const times = opts.repeat ?? DEFAULT_FEDAVG_REPEAT;
          const r = await runFedAvg(creds, workDir, opts.fedavgCases, opts.fedavgRounds, times);
          results["fedavg"] = r;
          texts.push(fedavgTable(r));
        } else if (scenario === "idle") {
          const idleOpts = { nodes: opts.idleNodes, windowSeconds: opts.idleSeconds };
          const r = await runIdleRepeated(creds, workDir, idleOpts, opts.repeat ?? DEFAULT_IDLE_REPEAT);
          results["idle"] = r;
          texts.push(idleTable(r));
        } else if (scenario === "train") {
          const r = await runTrain(workDir, opts.trainBackends, opts.repeat ?? DEFAULT_TRAIN_REPEAT);
          results["train"] = r;
          texts.push(trainTable(r));
        } else if (scenario === "round1000") {
          const roundOpts = { nodes: opts.roundNodes, rounds: opts.roundRounds };
          const r = await runRound1000Repeated(creds, workDir, roundOpts, opts.repeat ?? DEFAULT_ROUND1000_REPEAT);
          results["round1000"] = r;
          texts.push(round1000Table(r));
        } else if (scenario === "handshake") {
          const r = await runHandshake(creds, workDir, opts.repeat ?? DEFAULT_HANDSHAKE_REPEAT);
          results["handshake"] = r;
          texts.push(handshakeTable(r));
        } else {
          const r = await runHop(creds, workDir, opts.hopMB, opts.repeat ?? DEFAULT_HOP_REPEAT);
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
  const goals = goalRows();
  results["goals"] = goals;
  texts.push(goalsTable(goals));
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
