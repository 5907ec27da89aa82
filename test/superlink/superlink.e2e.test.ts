/**
 * End to end: spawns `node bin/flower-superlink` (from dist/) with TLS, node authentication and
 * a SQLite file, waits for its readiness line, talks to it with the generated clients and the
 * SuperNode auth helper, stops it with signals, and restarts it on the same database.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import * as grpc from "@grpc/grpc-js";
import { SuperNodeAuth } from "../../src/auth/client-auth";
import type { FleetClient } from "../../src/proto/flwr/proto/fleet";
import { unaryCall } from "../../src/transport/channel";
import { requireDist } from "../helpers/dist";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { authenticatedCreateNode, driverClient, fleetClient, statusOf } from "./helpers";

const BIN = join(REPO_ROOT, "bin", "flower-superlink");

interface Daemon {
  proc: ChildProcess;
  lines: Array<Record<string, unknown>>;
  stderr: string[];
  exited: Promise<number | null>;
  /** Resolves with the first log record matching `predicate`; rejects if the process exits first. */
  waitFor(predicate: (rec: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>>;
}

const daemons: Daemon[] = [];
const clients: grpc.Client[] = [];

function spawnSuperLink(args: string[]): Daemon {
  const proc = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, stdio: ["ignore", "ignore", "pipe"] });
  const lines: Array<Record<string, unknown>> = [];
  const stderr: string[] = [];
  const watchers = new Set<(rec: Record<string, unknown>) => void>();
  createInterface({ input: proc.stderr }).on("line", (line) => {
    stderr.push(line);
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    lines.push(rec);
    for (const w of [...watchers]) w(rec);
  });
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  const daemon: Daemon = {
    proc,
    lines,
    stderr,
    exited,
    waitFor(predicate, what) {
      const seen = lines.find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const watcher = (rec: Record<string, unknown>): void => {
          if (!predicate(rec)) return;
          watchers.delete(watcher);
          resolve(rec);
        };
        watchers.add(watcher);
        void exited.then((code) => {
          if (!watchers.has(watcher)) return;
          watchers.delete(watcher);
          reject(new Error(`flower-superlink exited with ${code} before ${what}:\n${stderr.join("\n")}`));
        });
      });
    },
  };
  daemons.push(daemon);
  return daemon;
}

let fx: Fixtures;
let ca: Buffer;
let clientKeys: string[];

beforeAll(() => {
  // e2e runs the compiled program, as users do.
  requireDist();
  fx = generateFixtures(2);
  ca = fx.read(fx.caCert);
  clientKeys = readFileSync(fx.allowlistCsv, "utf8").trim().split(",");
  // Only the first SuperNode is allowed at first.
  writeFileSync(fx.allowlistCsv, `${clientKeys[0]}\n`);
}, 180_000);

afterAll(() => fx?.cleanup());

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const d of daemons.splice(0)) {
    if (d.proc.exitCode === null && d.proc.signalCode === null) {
      d.proc.kill("SIGKILL");
      await d.exited;
    }
  }
});

function secureArgs(database: string): string[] {
  return [
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
    "--database",
    database,
    "--driver-api-address",
    "127.0.0.1:0",
    "--fleet-api-address",
    "127.0.0.1:0",
  ];
}

async function startSecure(database: string): Promise<{ daemon: Daemon; driverAddress: string; fleetAddress: string }> {
  const daemon = spawnSuperLink(secureArgs(database));
  const ready = await daemon.waitFor((r) => r["event"] === "superlink.ready", "readiness");
  return { daemon, driverAddress: String(ready["driverAddress"]), fleetAddress: String(ready["fleetAddress"]) };
}

/** CreateNode as an authenticated SuperNode; returns the node id. */
async function authCreateNode(fleet: FleetClient, auth: SuperNodeAuth): Promise<bigint> {
  return (await authenticatedCreateNode(fleet, auth)).nodeId;
}

async function stop(daemon: Daemon, signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
  daemon.proc.kill(signal);
  return daemon.exited;
}

test("TLS + auth + SQLite: accepts known nodes, refuses others, stops cleanly, keeps state across restarts", async () => {
  const database = join(fx.dir, "superlink.db");
  const first = await startSecure(database);
  const driver = driverClient(first.driverAddress, ca);
  const fleet = fleetClient(first.fleetAddress, ca);
  clients.push(driver, fleet);

  // An allowed node: CreateNode answers with the SuperLink's key; later calls carry a valid MAC.
  const node1 = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[0]!, fx.clientPublicKeys[0]!);
  const nodeId = await authCreateNode(fleet, node1);
  expect(nodeId).not.toBe(0n);
  const ping = { node: { nodeId, anonymous: false }, pingInterval: 30 };
  expect((await unaryCall(fleet.ping.bind(fleet), ping, node1.metadataFor("PingRequest", ping))).response.success).toBe(
    true,
  );

  const runId = (
    await unaryCall(driver.createRun.bind(driver), { fabId: "fab", fabVersion: "1", overrideConfig: new Map() })
  ).response.runId;
  expect((await unaryCall(driver.getNodes.bind(driver), { runId })).response.nodes).toEqual([
    { nodeId, anonymous: false },
  ]);
  const getRun = { runId };
  expect(
    (await unaryCall(fleet.getRun.bind(fleet), getRun, node1.metadataFor("GetRunRequest", getRun))).response.run?.runId,
  ).toBe(runId);

  // Unknown key.
  const node2 = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[1]!, fx.clientPublicKeys[1]!);
  const unknown = await statusOf(
    unaryCall(
      fleet.createNode.bind(fleet),
      { pingInterval: 30 },
      node2.metadataFor("CreateNodeRequest", { pingInterval: 30 }),
    ),
  );
  expect(unknown).toEqual({ code: grpc.status.UNAUTHENTICATED, details: "Access denied" });

  // Bad MAC: a token computed over a different request.
  const badMac = await statusOf(
    unaryCall(fleet.ping.bind(fleet), ping, node1.metadataFor("PingRequest", { ...ping, pingInterval: 31 })),
  );
  expect(badMac).toEqual({ code: grpc.status.UNAUTHENTICATED, details: "Access denied" });

  // Wrong node id, correctly MAC'ed.
  const other = { node: { nodeId: nodeId + 1n, anonymous: false }, pingInterval: 30 };
  const wrongNode = await statusOf(unaryCall(fleet.ping.bind(fleet), other, node1.metadataFor("PingRequest", other)));
  expect(wrongNode).toEqual({ code: grpc.status.UNAUTHENTICATED, details: "Access denied" });

  expect(await stop(first.daemon)).toBe(0);
  expect(first.daemon.lines.some((l) => String(l["msg"]).includes("stopped"))).toBe(true);

  // Restart on the same database: the run and the node are still there.
  const second = await startSecure(database);
  const driver2 = driverClient(second.driverAddress, ca);
  const fleet2 = fleetClient(second.fleetAddress, ca);
  clients.push(driver2, fleet2);
  expect((await unaryCall(driver2.getRun.bind(driver2), { runId })).response.run?.runId).toBe(runId);
  const again = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[0]!, fx.clientPublicKeys[0]!);
  expect(await authCreateNode(fleet2, again)).toBe(nodeId);
  expect(
    (await unaryCall(fleet2.getRun.bind(fleet2), getRun, again.metadataFor("GetRunRequest", getRun))).response.run
      ?.runId,
  ).toBe(runId);

  // SIGHUP reloads the allowlist: the second SuperNode is accepted afterwards.
  writeFileSync(fx.allowlistCsv, `${clientKeys.join(",")}\n`);
  second.daemon.proc.kill("SIGHUP");
  await second.daemon.waitFor(
    (r) => r["event"] === "superlink.allowlist-changed" && r["added"] === 1,
    "the allowlist reload",
  );
  const node2b = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[1]!, fx.clientPublicKeys[1]!);
  expect(await authCreateNode(fleet2, node2b)).not.toBe(0n);

  expect(await stop(second.daemon, "SIGINT")).toBe(0);
  writeFileSync(fx.allowlistCsv, `${clientKeys[0]}\n`);
});

test("a refused command line exits 2 with a clear message and no stack trace", async () => {
  const daemon = spawnSuperLink(["--driver-api-address", "127.0.0.1:0", "--fleet-api-address", "127.0.0.1:0"]);
  expect(await daemon.exited).toBe(2);
  const text = daemon.stderr.join("\n");
  expect(text).toContain("Certificates are required unless running in insecure mode");
  expect(text).not.toMatch(/\n\s+at /);
});

test("garbage in a key file exits 2 naming the file", async () => {
  const garbage = join(fx.dir, "garbage-key");
  writeFileSync(garbage, "-----BEGIN OPENSSH PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END OPENSSH PRIVATE KEY-----\n");
  const args = secureArgs(":flwr-in-memory-state:");
  args[args.indexOf("--auth-superlink-private-key") + 1] = garbage;
  const daemon = spawnSuperLink(args);
  expect(await daemon.exited).toBe(2);
  expect(daemon.stderr.join("\n")).toContain(garbage);
});
