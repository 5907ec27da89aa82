/**
 * End to end: `node bin/flower-client-app` as a child process (built dist/), a tiny ClientApp
 * module written to a temp dir and loaded with --dir, against an in-process SuperLink with TLS
 * and node authentication. Readiness is the `supernode.ready` log line, never a sleep.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fitInsToRecordSet, recordSetToFitRes } from "../../src/core/records/compat";
import { ndarraysToParameters, parametersToNdarrays } from "../../src/core/records/parameters";
import type { SuperLinkHandle } from "../../src/superlink/superlink";
import { requireDist } from "../helpers/dist";
import { REPO_ROOT, generateFixtures, type Fixtures } from "../helpers/fixtures";
import { TestDriver, startTestSuperLink } from "./helpers";

jest.setTimeout(120_000);

const BIN = join(REPO_ROOT, "bin", "flower-client-app");

let fixtures: Fixtures;
let otherFixtures: Fixtures;
let appDir: string;
let link: SuperLinkHandle;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  // The binary runs the compiled CLI.
  requireDist();
  fixtures = generateFixtures(1);
  otherFixtures = generateFixtures(1);
  appDir = mkdtempSync(join(tmpdir(), "flwr-ts-e2e-app-"));
  writeFileSync(
    join(appDir, "client.js"),
    `"use strict";
const { ClientApp, NumPyClient } = require(${JSON.stringify(join(REPO_ROOT, "dist", "client", "index.js"))});
class Doubler extends NumPyClient {
  constructor(cid) { super(); this.cid = cid; }
  fit(parameters) {
    return [parameters.map((a) => ({ ...a, data: a.data.map((v) => v * 2) })), 7, { cid: this.cid }];
  }
}
exports.app = new ClientApp({ clientFn: (_context, cid) => new Doubler(cid) });
`,
  );
  link = await startTestSuperLink({ fixtures, tls: true, auth: true });
});

afterAll(async () => {
  for (const child of children) child.kill("SIGKILL");
  await link?.close(0);
  fixtures?.cleanup();
  otherFixtures?.cleanup();
  if (appDir) rmSync(appDir, { recursive: true, force: true });
});

interface Spawned {
  child: ChildProcess;
  lines: Array<Record<string, unknown>>;
  stderr: () => string;
  exited: Promise<number | null>;
  waitFor(predicate: (line: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>>;
}

function spawnClientApp(args: string[]): Spawned {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  const lines: Array<Record<string, unknown>> = [];
  let stderr = "";
  let partial = "";
  const waiters: Array<() => void> = [];
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
    partial += chunk.toString();
    const parts = partial.split("\n");
    partial = parts.pop()!;
    for (const line of parts) {
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line (e.g. a Node warning)
      }
    }
    waiters.forEach((w) => w());
  });
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code) => {
      children.delete(child);
      waiters.forEach((w) => w());
      resolve(code);
    }),
  );
  return {
    child,
    lines,
    stderr: () => stderr,
    exited,
    waitFor(predicate, what) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const hit = lines.find(predicate);
          if (hit) resolve(hit);
          else if (child.exitCode !== null)
            reject(new Error(`flower-client-app exited (${child.exitCode}) before ${what}:\n${stderr}`));
          else waiters.push(check);
        };
        check();
      });
    },
  };
}

const tlsArgs = (): string[] => ["--superlink", link.fleetAddress, "--root-certificates", fixtures.caCert];

describe("flower-client-app (spawned)", () => {
  it("registers, runs a pushed task, and on SIGTERM sends DeleteNode and exits 0", async () => {
    const node = spawnClientApp([
      "client:app",
      "--dir",
      appDir,
      ...tlsArgs(),
      "--auth-supernode-private-key",
      fixtures.clientPrivateKeys[0]!,
      "--auth-supernode-public-key",
      fixtures.clientPublicKeys[0]!,
      "--node-config",
      "partition-id=1,num-partitions=2",
    ]);
    const ready = await node.waitFor((l) => l["event"] === "supernode.ready", "the readiness line");
    const nodeId = BigInt(ready["nodeId"] as string);
    expect(await link.state.acknowledgePing(nodeId, 30)).toBe(true);

    const driver = new TestDriver(link.driverAddress, fixtures.read(fixtures.caCert));
    try {
      const runId = await driver.createRun();
      const content = fitInsToRecordSet({
        parameters: ndarraysToParameters([{ dtype: "float32", shape: [3], data: new Float32Array([1, 2, 3]) }]),
        config: {},
      });
      const { taskId } = await driver.push(runId, nodeId, "train", content);
      const { taskRes, message } = await driver.reply(taskId);
      expect(taskRes.task!.ancestry).toEqual([taskId]);
      expect(taskRes.task!.producer).toEqual({ nodeId, anonymous: false });
      const fitRes = recordSetToFitRes(message.content!);
      expect(fitRes.numExamples).toBe(7);
      expect(fitRes.metrics).toEqual({ cid: "1" }); // partition-id from --node-config
      expect(Array.from(parametersToNdarrays(fitRes.parameters)[0]!.data as Float32Array)).toEqual([2, 4, 6]);
    } finally {
      driver.close();
    }

    node.child.kill("SIGTERM");
    expect(await node.exited).toBe(0);
    // The SuperLink saw DeleteNode: it no longer knows the node.
    expect(await link.state.acknowledgePing(nodeId, 30)).toBe(false);
    expect(node.lines.some((l) => l["event"] === "supernode.node-deleted")).toBe(true);
  });

  it("exits 2 with the certificate message when the CA did not sign the SuperLink's certificate", async () => {
    const node = spawnClientApp([
      "client:app",
      "--dir",
      appDir,
      "--superlink",
      link.fleetAddress,
      "--root-certificates",
      otherFixtures.caCert,
      "--auth-supernode-private-key",
      fixtures.clientPrivateKeys[0]!,
      "--auth-supernode-public-key",
      fixtures.clientPublicKeys[0]!,
    ]);
    expect(await node.exited).toBe(2);
    expect(node.stderr()).toMatch(/TLS certificate verification of the SuperLink at 127\.0\.0\.1:\d+ failed/);
    expect(node.stderr()).toContain("--root-certificates");
  });

  it("exits 2 with the access-denied message for a key that is not in the allowlist", async () => {
    const node = spawnClientApp([
      "client:app",
      "--dir",
      appDir,
      ...tlsArgs(),
      "--auth-supernode-private-key",
      otherFixtures.clientPrivateKeys[0]!,
      "--auth-supernode-public-key",
      otherFixtures.clientPublicKeys[0]!,
    ]);
    expect(await node.exited).toBe(2);
    expect(node.stderr()).toContain("access denied: is this node's public key in the SuperLink's allowlist?");
  });
});
