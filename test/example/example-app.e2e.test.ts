/**
 * The bundled example as a user runs it (README "Running it by hand"), with all three daemons as
 * real processes, TLS and node authentication from generate.sh: `client:app` and `server:app`
 * from the repository root. Smaller data than the demo (node config train-count/test-count) so
 * it stays quick; the demo itself runs the default sizes.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";

interface Daemon {
  proc: ChildProcess;
  stdout: string[];
  stderr: string[];
  exited: Promise<number | null>;
  event(name: string): Promise<Record<string, unknown>>;
}

const daemons: Daemon[] = [];
let fx: Fixtures;
let outDir: string;

function startDaemon(bin: string, args: string[]): Daemon {
  const proc = spawn(process.execPath, [join(REPO_ROOT, "bin", bin), ...args], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  const records: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  createInterface({ input: proc.stdout }).on("line", (line) => stdout.push(line));
  createInterface({ input: proc.stderr }).on("line", (line) => {
    stderr.push(line);
    try {
      records.push(JSON.parse(line) as Record<string, unknown>);
      for (const w of waiters) w();
    } catch {
      /* not a log line */
    }
  });
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  const event = (name: string) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const check = () => {
        const found = records.find((r) => r["event"] === name);
        if (found) resolve(found);
      };
      waiters.push(check);
      check();
      void exited.then((code) =>
        reject(new Error(`${bin} exited with ${code} before "${name}":\n${stderr.join("\n")}`)),
      );
    });
  const daemon = { proc, stdout, stderr, exited, event };
  daemons.push(daemon);
  return daemon;
}

beforeAll(() => {
  fx = generateFixtures(2);
  outDir = mkdtempSync(join(tmpdir(), "flwr-ts-example-e2e-"));
});

afterAll(async () => {
  for (const d of daemons.reverse()) {
    if (d.proc.exitCode === null && d.proc.signalCode === null) d.proc.kill("SIGKILL");
    await d.exited;
  }
  fx?.cleanup();
  if (outDir) rmSync(outDir, { recursive: true, force: true });
});

test("SuperLink + 2 SuperNodes running client:app + server:app: 3 FedAvg rounds with TLS and auth", async () => {
  const superlink = startDaemon("flower-superlink", [
    "--ssl-ca-certfile",
    fx.caCert,
    "--ssl-certfile",
    fx.serverCert,
    "--ssl-keyfile",
    fx.serverKey,
    "--auth-list-public-keys",
    fx.allowlistCsv,
    "--auth-superlink-private-key",
    fx.superlinkPrivateKey,
    "--auth-superlink-public-key",
    fx.superlinkPublicKey,
    "--driver-api-address",
    "127.0.0.1:0",
    "--fleet-api-address",
    "127.0.0.1:0",
  ]);
  const ready = await superlink.event("superlink.ready");

  const nodes = [0, 1].map((i) =>
    startDaemon("flower-client-app", [
      "client:app",
      "--root-certificates",
      fx.caCert,
      "--superlink",
      String(ready["fleetAddress"]),
      "--auth-supernode-private-key",
      fx.clientPrivateKeys[i]!,
      "--auth-supernode-public-key",
      fx.clientPublicKeys[i]!,
      "--node-config",
      `partition-id=${i},num-partitions=2,train-count=48,test-count=32`,
    ]),
  );
  await Promise.all(nodes.map((n) => n.event("supernode.ready")));

  const historyJson = join(outDir, "history.json");
  const serverApp = startDaemon("flower-server-app", [
    "server:app",
    "--root-certificates",
    fx.caCert,
    "--dir",
    "./",
    "--superlink",
    String(ready["driverAddress"]),
    "--history-json",
    historyJson,
  ]);
  expect(await serverApp.exited).toBe(0);

  const stdout = serverApp.stdout.join("\n");
  expect(stdout).toContain("Run finished 3 round(s)");
  expect(stdout).toContain("History (metrics, distributed, evaluate)");
  const history = JSON.parse(readFileSync(historyJson, "utf8")) as {
    lossesDistributed: Array<[number, number]>;
    metricsDistributed: { accuracy: Array<[number, number]> };
    metricsDistributedFit: { train_loss: Array<[number, number]> };
  };
  expect(history.lossesDistributed.map(([round]) => round)).toEqual([1, 2, 3]);
  expect(history.metricsDistributed.accuracy.map(([round]) => round)).toEqual([1, 2, 3]);
  for (const [, accuracy] of history.metricsDistributed.accuracy) {
    expect(accuracy).toBeGreaterThanOrEqual(0);
    expect(accuracy).toBeLessThanOrEqual(1);
  }
  for (const [, loss] of [...history.lossesDistributed, ...history.metricsDistributedFit.train_loss]) {
    expect(Number.isFinite(loss)).toBe(true);
  }
  // Both nodes trained every round: the SuperLink saw their replies and they still run.
  for (const node of nodes) expect(node.proc.exitCode).toBeNull();

  // SIGTERM: SuperNodes deregister and exit 0, then the SuperLink stops cleanly.
  for (const node of nodes) node.proc.kill("SIGTERM");
  expect(await Promise.all(nodes.map((n) => n.exited))).toEqual([0, 0]);
  superlink.proc.kill("SIGTERM");
  expect(await superlink.exited).toBe(0);
}, 180_000);
