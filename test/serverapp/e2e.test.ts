/**
 * bin/flower-server-app as a real child process (built dist/), against a SuperLink and fake
 * SuperNodes running in the test process: success (exit 0, history on stdout, JSON logs on
 * stderr), plaintext refused (exit 2), SIGINT (exit 130), SuperLink gone mid-run (exit 1).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { FitRes } from "../../src/core/records/legacy-types";
import { requireDist } from "../helpers/dist";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { legacyNode } from "../server/fake-driver";
import { vectorParameters } from "../server/helpers";
import { FakeSuperNode, startTestSuperLink } from "./helpers";

let fx: Fixtures;
let dir: string;
const cleanups: Array<() => unknown> = [];

beforeAll(() => {
  requireDist();
  fx = generateFixtures(1);
  dir = mkdtempSync(join(tmpdir(), "flwr-ts-e2e-serverapp-"));
  const serverModule = JSON.stringify(join(REPO_ROOT, "dist", "server", "index.js"));
  writeFileSync(
    join(dir, "server.js"),
    `const { ServerApp, FedAvg } = require(${serverModule});\n` +
      `const weighted = (rs) => { const t = rs.reduce((s, [n]) => s + n, 0); return { acc: rs.reduce((s, [n, m]) => s + n * m.acc, 0) / t }; };\n` +
      `exports.app = new ServerApp({ config: { numRounds: 2 }, strategy: new FedAvg({ fractionEvaluate: 0, fitMetricsAggregationFn: weighted }) });\n` +
      `exports.waiting = new ServerApp({ config: { numRounds: 1 }, strategy: new FedAvg({ minAvailableClients: 5 }) });\n`,
  );
}, 180_000);
afterAll(() => {
  fx?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Child {
  proc: ChildProcess;
  stdout: string[];
  logs: Array<Record<string, unknown>>;
  exited: Promise<number | null>;
  /** Resolves with the first log record that has this event. */
  event(name: string): Promise<Record<string, unknown>>;
}

function serverApp(args: string[]): Child {
  const proc = spawn(process.execPath, [join(REPO_ROOT, "bin", "flower-server-app"), ...args], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stdout: string[] = [];
  const logs: Array<Record<string, unknown>> = [];
  const listeners: Array<() => void> = [];
  createInterface({ input: proc.stdout }).on("line", (l) => stdout.push(l));
  createInterface({ input: proc.stderr }).on("line", (l) => {
    try {
      logs.push(JSON.parse(l) as Record<string, unknown>);
      for (const f of listeners) f();
    } catch {
      /* a Node warning, not a log line */
    }
  });
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  cleanups.push(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    await exited;
  });
  const event = (name: string): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const hit = logs.find((l) => l["event"] === name);
        if (hit) resolve(hit);
      };
      listeners.push(check);
      check();
      void exited.then((code) => reject(new Error(`flower-server-app exited (${code}) before "${name}"`)));
    });
  return { proc, stdout, logs, exited, event };
}

test("runs a FedAvg app to completion: history on stdout, logs on stderr, exit 0", async () => {
  const link = await startTestSuperLink(fx);
  cleanups.push(() => link.close(0));
  const ca = fx.read(fx.caCert);
  const fit = (w: number, n: number, acc: number): FitRes => ({
    status: { code: 0, message: "" },
    parameters: vectorParameters([w]),
    numExamples: n,
    metrics: { acc },
  });
  for (const [w, n, acc] of [
    [1, 1, 0.5],
    [3, 3, 0.25],
  ] as const) {
    const node = await FakeSuperNode.start(
      link.fleetAddress,
      ca,
      legacyNode({ getParameters: () => vectorParameters([0]), fit: () => fit(w, n, acc) }),
    );
    cleanups.push(() => node.die());
  }
  const historyJson = join(dir, "history.json");
  const child = serverApp([
    "server:app",
    "--root-certificates",
    fx.caCert,
    "--superlink",
    link.driverAddress,
    "--history-json",
    historyJson,
  ]);
  expect(await child.exited).toBe(0);
  expect(child.stdout[0]).toBe("[SUMMARY]");
  expect(child.stdout[1]).toMatch(/^Run finished 2 round\(s\) in \d+\.\d\ds$/);
  expect(child.stdout.slice(2)).toEqual([
    "\tHistory (metrics, distributed, fit):",
    "\t{'acc': [(1, 0.3125), (2, 0.3125)]}",
  ]);
  expect(child.logs.find((l) => l["event"] === "serverapp.run-created")?.["runId"]).toMatch(/^-?\d+$/);
  expect(child.logs.every((l) => l["component"] === "serverapp")).toBe(true);
  expect(
    (JSON.parse(readFileSync(historyJson, "utf8")) as { metricsDistributedFit: unknown }).metricsDistributedFit,
  ).toEqual({
    acc: [
      [1, 0.3125],
      [2, 0.3125],
    ],
  });
});

test("refuses plaintext without --insecure: exit 2, nothing on stdout", async () => {
  const child = serverApp(["server:app", "--superlink", "127.0.0.1:9"]);
  expect(await child.exited).toBe(2);
  expect(child.stdout).toEqual([]);
  expect(String(child.logs.find((l) => l["level"] === 60)?.["msg"])).toMatch(/No --root-certificates given/);
});

test("stops on SIGINT with exit 130", async () => {
  const link = await startTestSuperLink(fx);
  cleanups.push(() => link.close(0));
  const child = serverApp(["server:waiting", "--root-certificates", fx.caCert, "--superlink", link.driverAddress]);
  await child.event("serverapp.waiting-for-clients");
  child.proc.kill("SIGINT");
  expect(await child.exited).toBe(130);
});

test("exits 1 with a clear message when the SuperLink goes away mid-run for longer than --retry-deadline", async () => {
  const link = await startTestSuperLink(fx);
  const child = serverApp([
    "server:waiting",
    "--root-certificates",
    fx.caCert,
    "--superlink",
    link.driverAddress,
    "--retry-deadline",
    "1",
  ]);
  await child.event("serverapp.waiting-for-clients");
  await link.close(0);
  expect(await child.exited).toBe(1);
  const fatalLine = child.logs.find((l) => l["level"] === 60);
  expect(String(fatalLine?.["msg"])).toMatch(
    /GetNodes to the SuperLink Driver API at 127\.0\.0\.1:\d+ failed \(UNAVAILABLE\).*gave up after retrying for 1 s \(--retry-deadline\)/,
  );
});
