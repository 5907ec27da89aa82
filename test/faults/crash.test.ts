/**
 * Crash durability with real processes (TLS + node authentication, SQLite state): the SuperLink
 * is SIGKILLed at random points of a multi-round run and restarted on the same database file and
 * the same ports. The run must finish with exactly the History of a crash-free run (the app is
 * deterministic and every round's aggregate depends on every earlier result, so one lost or
 * doubled result shows), every round with all results and no failure.
 *
 * FLWR_CRASH_TRIALS (default 1) sets the number of trials, FLWR_CRASH_KILLS (default 3) the kills
 * per trial, FLWR_CRASH_SEED the first trial's seed (printed on failure, to replay a trial),
 * FLWR_CRASH_REPORT a file that gets one JSON line of counts per passed trial.
 * `npm run test:crash` runs 10 trials.
 *
 * Also here: a second SuperLink on a file in use, and a corrupt file, both refused with exit 2.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SqliteState } from "../../src/state/sqlite-state";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { TestClock, makeTaskIns, sampleRecordSet } from "../state/state.conformance";
import {
  type Proc,
  type RunningSuperLink,
  ensureDist,
  fatalText,
  isEvent,
  killAll,
  spawnBin,
  startSuperLink,
  superlinkArgs,
} from "./helpers";

const TRIALS = Number(process.env["FLWR_CRASH_TRIALS"] ?? 1);
const KILLS = Number(process.env["FLWR_CRASH_KILLS"] ?? 3);
const FIRST_SEED = Number(process.env["FLWR_CRASH_SEED"] ?? Date.now() % 100_000);
const ROUNDS = 10;
/** Short lease so a delivery lost in a crash is re-offered within the trial's time. */
const LEASE_SECONDS = 3;
/** A trial that has not finished by then is stuck (a clean one takes 10-30 s on 2 cores). */
const TRIAL_LIMIT_MS = 80_000;

jest.setTimeout(120_000);

let fx: Fixtures;
let dir: string;
let expectedHistory: unknown;

/** A ClientApp/ServerApp pair whose History depends on every result of every round. */
function writeDeterministicApps(target: string): void {
  const dist = (m: string): string => JSON.stringify(join(REPO_ROOT, "dist", m, "index.js"));
  writeFileSync(
    join(target, "client.js"),
    `"use strict";
const { ClientApp, NumPyClient } = require(${dist("client")});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
class CrashClient extends NumPyClient {
  constructor(context) { super(); this.k = Number(context.nodeConfig["partition-id"]) + 1; }
  getParameters() { return [{ dtype: "float32", shape: [2], data: new Float32Array([0, 0]) }]; }
  async fit(parameters) {
    await sleep(250);
    const out = parameters.map((a) => ({ ...a, data: a.data.map((v) => v * 0.5 + this.k) }));
    return [out, this.k, { w: Number(out[0].data[0]) }];
  }
  async evaluate(parameters) {
    await sleep(50);
    const v = Number(parameters[0].data[0]);
    return [v + this.k, this.k, { acc: v / (v + this.k) }];
  }
}
exports.app = new ClientApp({ clientFn: (context) => new CrashClient(context) });
`,
  );
  writeFileSync(
    join(target, "server.js"),
    `"use strict";
const { ServerApp, FedAvg } = require(${dist("server")});
const mean = (key) => (results) => {
  const total = results.reduce((s, [n]) => s + n, 0);
  return { [key]: results.reduce((s, [n, m]) => s + n * m[key], 0) / total };
};
exports.app = new ServerApp({
  config: { numRounds: ${ROUNDS} },
  strategy: new FedAvg({
    minFitClients: 2, minEvaluateClients: 2, minAvailableClients: 2,
    fitMetricsAggregationFn: mean("w"),
    evaluateMetricsAggregationFn: mean("acc"),
  }),
});
`,
  );
}

/** mulberry32: a small seeded generator, so a failing trial can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Deployment {
  database: string;
  driver: string;
  fleet: string;
  args: string[];
}

function superlinkFlags(database: string, driver: string, fleet: string): string[] {
  return [...superlinkArgs(fx, { database, driver, fleet }), "--task-lease-seconds", String(LEASE_SECONDS)];
}

/** Ports 0 until the first start, which binds them; every restart reuses them (see startOnSamePorts). */
function deployment(name: string): Deployment {
  const database = join(dir, `${name}.db`);
  const [driver, fleet] = ["127.0.0.1:0", "127.0.0.1:0"];
  return { database, driver, fleet, args: superlinkFlags(database, driver, fleet) };
}

/**
 * Starts the SuperLink, retrying while the old process's ports are not yet free. The first start
 * binds port 0 and records the ports from its ready line (no free-port probe to race with).
 */
async function startOnSamePorts(d: Deployment, name: string): Promise<RunningSuperLink> {
  for (let attempt = 1; ; attempt++) {
    try {
      const link = await startSuperLink(d.args, name);
      if (d.driver.endsWith(":0")) {
        [d.driver, d.fleet] = [link.driverAddress, link.fleetAddress];
        d.args = superlinkFlags(d.database, d.driver, d.fleet);
      }
      return link;
    } catch (err) {
      if (attempt >= 20 || !/EADDRINUSE|address already in use|No address added/i.test(String(err))) throw err;
      await new Promise((r) => setTimeout(r, 150));
    }
  }
}

function spawnNodes(d: Deployment): Proc[] {
  return [0, 1].map((i) =>
    spawnBin(`node-${i + 1}`, "flower-client-app", [
      "client:app",
      "--dir",
      dir,
      "--superlink",
      d.fleet,
      "--root-certificates",
      fx.caCert,
      "--auth-supernode-private-key",
      fx.clientPrivateKeys[i]!,
      "--auth-supernode-public-key",
      fx.clientPublicKeys[i]!,
      "--node-config",
      `partition-id=${i}`,
    ]),
  );
}

function spawnRun(d: Deployment, historyJson: string): Proc {
  return spawnBin(
    "serverapp",
    "flower-server-app",
    [
      "server:app",
      "--dir",
      dir,
      "--superlink",
      d.driver,
      "--root-certificates",
      fx.caCert,
      "--retry-deadline",
      "30",
      "--history-json",
      historyJson,
    ],
    dir,
  );
}

/** [results, failures] of every aggregate line of the given kind. */
function aggregates(serverApp: Proc, event: string): Array<[unknown, unknown]> {
  return serverApp.logs.filter(isEvent(event)).map((r) => [r["results"], r["failures"]]);
}

beforeAll(async () => {
  ensureDist();
  fx = generateFixtures(2);
  dir = mkdtempSync(join(tmpdir(), "flwr-ts-crash-"));
  writeDeterministicApps(dir);
  // The reference: the same deployment without crashes.
  const d = deployment("reference");
  await startOnSamePorts(d, "superlink-reference");
  const nodes = spawnNodes(d);
  await Promise.all(nodes.map((n) => n.waitFor(isEvent("supernode.ready"), "registration")));
  const historyPath = join(dir, "reference.json");
  const run = spawnRun(d, historyPath);
  const code = await run.exited;
  if (code !== 0) throw new Error(`reference run exited ${code}:\n${run.text()}`);
  expectedHistory = JSON.parse(readFileSync(historyPath, "utf8"));
  await killAll();
}, 120_000);
afterEach(async () => {
  await killAll();
});
afterAll(() => {
  fx?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const trials = Array.from({ length: TRIALS }, (_, i) => FIRST_SEED + i);

test.each(trials)(
  `SIGKILL the SuperLink ${KILLS} times during a ${ROUNDS}-round run (seed %i): same History, no lost or doubled result`,
  async (seed) => {
    const trialStart = Date.now();
    const random = seeded(seed);
    const d = deployment(`trial-${seed}`);
    let link = await startOnSamePorts(d, "superlink-0");
    const nodes = spawnNodes(d);
    await Promise.all(nodes.map((n) => n.waitFor(isEvent("supernode.ready"), "registration")));
    const historyPath = join(dir, `trial-${seed}.json`);
    const run = spawnRun(d, historyPath);

    // Kill rounds drawn without repeats from 1..ROUNDS-1, each kill at a random point of its
    // round (mid-push, mid-training, mid-pull, between fit and evaluate).
    const rounds = Array.from({ length: ROUNDS - 1 }, (_, i) => i + 1);
    const targets = Array.from(
      { length: Math.min(KILLS, rounds.length) },
      () => rounds.splice(Math.floor(random() * rounds.length), 1)[0]!,
    );
    targets.sort((a, b) => a - b);
    const killedAt: number[] = [];
    for (const [k, target] of targets.entries()) {
      const reached = await Promise.race([
        run
          .waitFor(
            isEvent("serverapp.round", (r) => Number(r["round"]) >= target),
            `round ${target}`,
          )
          .then(
            () => true,
            () => false, // the run ended (the checks below say how)
          ),
        new Promise<boolean>((resolve) =>
          setTimeout(() => resolve(false), Math.max(0, trialStart + TRIAL_LIMIT_MS - Date.now())).unref(),
        ),
      ]);
      if (!reached) break;
      await new Promise((r) => setTimeout(r, random() * 700));
      if (!run.alive()) break;
      link.proc.proc.kill("SIGKILL");
      await link.proc.exited;
      killedAt.push(run.logs.filter(isEvent("serverapp.round")).length);
      link = await startOnSamePorts(d, `superlink-${k + 1}`);
    }

    const context = `seed ${seed}, kills in rounds ${JSON.stringify(killedAt)}`;
    // Bounded: a stuck run fails with every process's last log lines instead of a jest timeout.
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([
      run.exited,
      new Promise<"stuck">(
        (resolve) =>
          (timer = setTimeout(() => resolve("stuck"), Math.max(1_000, trialStart + TRIAL_LIMIT_MS - Date.now()))),
      ),
    ]);
    clearTimeout(timer);
    if (code === "stuck") {
      const tails = [run, ...nodes, link.proc].map((p) => `--- ${p.name}:\n${p.stderr.slice(-25).join("\n")}`);
      throw new Error(`${context}: the trial did not finish within ${TRIAL_LIMIT_MS / 1000} s\n${tails.join("\n")}`);
    }
    if (code !== 0)
      throw new Error(`${context}: ServerApp exited ${code}: ${fatalText(run)}\n${run.text().slice(-3000)}`);
    expect({ context, history: JSON.parse(readFileSync(historyPath, "utf8")) }).toEqual({
      context,
      history: expectedHistory,
    });
    // Every round got both results and no failure: nothing lost, nothing counted twice.
    const full = Array.from({ length: ROUNDS }, () => [2, 0]);
    expect({ context, fit: aggregates(run, "serverapp.aggregate-fit") }).toEqual({ context, fit: full });
    expect({ context, evaluate: aggregates(run, "serverapp.aggregate-evaluate") }).toEqual({ context, evaluate: full });
    // No SuperNode ran one instruction twice.
    for (const n of nodes) {
      const replied = n.logs.filter(isEvent("supernode.reply-sent")).map((l) => String(l["replyTo"]));
      expect({ context, node: n.name, duplicates: replied.length - new Set(replied).size }).toEqual({
        context,
        node: n.name,
        duplicates: 0,
      });
    }
    expect(killedAt.length).toBeGreaterThan(0);
    const report = process.env["FLWR_CRASH_REPORT"];
    if (report) {
      const count = (p: Proc[], event: string): number =>
        p.reduce((n, x) => n + x.logs.filter(isEvent(event)).length, 0);
      const line = {
        seed,
        killedInRounds: killedAt,
        seconds: Number(((Date.now() - trialStart) / 1000).toFixed(1)),
        driverRetries: count([run], "serverapp.retry"),
        duplicateRepliesDropped: count([run], "serverapp.duplicate-reply"),
        repeatedTaskInsSkipped: count(nodes, "supernode.task-repeated"),
        nodeReplies: count(nodes, "supernode.reply-sent"),
      };
      writeFileSync(report, JSON.stringify(line) + "\n", { flag: "a" });
    }
  },
);

describe("the SQLite file at start", () => {
  test("a second SuperLink on a file in use exits 2 at once, saying so; after a SIGKILL of the first, a restart opens it", async () => {
    const d = deployment("locked");
    const first = await startOnSamePorts(d, "superlink-first");
    const second = spawnBin("superlink-second", "flower-superlink", [...superlinkArgs(fx, { database: d.database })]);
    expect(await second.exited).toBe(2);
    expect(fatalText(second)).toMatch(/locked by another process: is another flower-superlink running on it\?/);
    expect(second.logs.some(isEvent("superlink.ready"))).toBe(false);
    first.proc.proc.kill("SIGKILL");
    await first.proc.exited;
    const again = await startOnSamePorts(d, "superlink-again");
    expect(again.proc.alive()).toBe(true);
  });

  test("a file with corrupt pages is refused with exit 2 (FLWR_STATE_CORRUPT) before ready", async () => {
    const database = join(dir, "corrupt.db");
    // A state file with enough tasks to span many pages, written as the SuperLink writes it.
    const state = new SqliteState(database);
    const runId = state.createRun("", "", new Map());
    const nodeId = state.createNode(30);
    const clock = new TestClock();
    clock.t = Date.now() / 1000;
    for (let i = 0; i < 200; i++) {
      state.storeTaskIns(makeTaskIns(clock, runId, { nodeId, anonymous: false }, { recordset: sampleRecordSet() }));
    }
    state.close();
    const bytes = readFileSync(database);
    const pageSize = bytes.readUInt16BE(16) === 1 ? 65536 : bytes.readUInt16BE(16);
    const pages = bytes.length / pageSize;
    expect(pages).toBeGreaterThan(4);
    const at = Math.floor(pages / 2) * pageSize;
    bytes.fill(0xa5, at, at + pageSize);
    writeFileSync(database, bytes);
    const broken = spawnBin("superlink-corrupt", "flower-superlink", superlinkArgs(fx, { database }));
    expect(await broken.exited).toBe(2);
    const fatal = broken.logs.find((l) => l["level"] === 60);
    expect(fatal?.["code"]).toBe("FLWR_STATE_CORRUPT");
    expect(String(fatal?.["msg"])).toMatch(/is corrupt/);
    expect(broken.logs.some(isEvent("superlink.ready"))).toBe(false);
  });
});
