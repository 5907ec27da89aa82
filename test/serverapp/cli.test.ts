/**
 * `flower-server-app` command line, in-process through main(): configuration errors exit 2
 * with a clear message (plaintext is refused unless --insecure), and a full run against a real
 * SuperLink prints the summary to stdout and exits 0.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { main } from "../../src/cli/flower-server-app";
import type { FitRes } from "../../src/core/records/legacy-types";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { legacyNode } from "../server/fake-driver";
import { vectorParameters } from "../server/helpers";
import { FakeSuperNode, startTestSuperLink } from "./helpers";

let fx: Fixtures;
let dir: string;

beforeAll(() => {
  fx = generateFixtures(1);
  dir = mkdtempSync(join(tmpdir(), "flwr-ts-cli-"));
  const serverModule = JSON.stringify(join(REPO_ROOT, "src", "server"));
  writeFileSync(
    join(dir, "server_app.js"),
    `const { ServerApp, FedAvg } = require(${serverModule});\n` +
      `exports.app = new ServerApp({ config: { numRounds: 1 }, strategy: new FedAvg({ fractionEvaluate: 0, minFitClients: 1, minAvailableClients: 1 }) });\n` +
      `exports.notAnApp = { hello: "world" };\n`,
  );
  writeFileSync(join(dir, "not-pem.txt"), "hello\n");
});
afterAll(() => {
  fx.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

interface CliRun {
  code: number;
  stdout: string;
  usage: string;
  logs: Array<Record<string, unknown>>;
}

async function runCli(args: string[], signal?: AbortSignal): Promise<CliRun> {
  let stdout = "";
  let usage = "";
  const logs: Array<Record<string, unknown>> = [];
  const logDestination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString("utf8").split("\n"))
        if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const code = await main(["node", "flower-server-app", ...args], {
    writeOut: (s) => (stdout += s),
    writeErr: (s) => (usage += s),
    out: (s) => (stdout += s),
    logDestination,
    ...(signal ? { signal } : {}),
  });
  return { code, stdout, usage, logs };
}

const fatal = (r: CliRun): string => String(r.logs.find((l) => l["level"] === 60)?.["msg"] ?? "");

describe("flower-server-app configuration errors (exit 2)", () => {
  it("refuses to connect in plaintext without --insecure (Flower 1.10 silently would)", async () => {
    const r = await runCli(["server_app:app", "--dir", dir, "--superlink", "127.0.0.1:1"]);
    expect(r.code).toBe(2);
    expect(fatal(r)).toMatch(/No --root-certificates given.*--insecure/);
  });

  it("refuses --insecure together with --root-certificates", async () => {
    const r = await runCli(["server_app:app", "--dir", dir, "--insecure", "--root-certificates", fx.caCert]);
    expect(r.code).toBe(2);
    expect(fatal(r)).toMatch(/Conflicting options/);
  });

  it("wants exactly one of a server-app and --run-id", async () => {
    const both = await runCli(["server_app:app", "--dir", dir, "--insecure", "--run-id", "42"]);
    expect(both.code).toBe(2);
    expect(fatal(both)).toMatch(/either a ServerApp reference or a Run ID, but not both/);
    const neither = await runCli(["--insecure"]);
    expect(neither.code).toBe(2);
    expect(fatal(neither)).toMatch(/either a ServerApp reference or a Run ID/);
    const runIdOnly = await runCli(["--insecure", "--run-id", "-9223372036854775808"]);
    expect(runIdOnly.code).toBe(2);
    expect(fatal(runIdOnly)).toMatch(/--run-id -9223372036854775808 without a server-app.*not support/);
  });

  it("refuses a missing or non-PEM --root-certificates file, naming it", async () => {
    const missing = await runCli(["server_app:app", "--dir", dir, "--root-certificates", join(dir, "nope.pem")]);
    expect(missing.code).toBe(2);
    expect(fatal(missing)).toContain("nope.pem");
    const notPem = await runCli(["server_app:app", "--dir", dir, "--root-certificates", join(dir, "not-pem.txt")]);
    expect(notPem.code).toBe(2);
    expect(fatal(notPem)).toMatch(/not-pem\.txt" is not a PEM file/);
  });

  it("refuses an app that cannot be loaded or is not a ServerApp", async () => {
    const missing = await runCli(["nowhere:app", "--dir", dir, "--insecure"]);
    expect(missing.code).toBe(2);
    expect(fatal(missing)).toMatch(/Cannot find module "nowhere"/);
    const wrong = await runCli(["server_app:notAnApp", "--dir", dir, "--insecure"]);
    expect(wrong.code).toBe(2);
    expect(fatal(wrong)).toMatch(/is not a ServerApp/);
  });

  it("rejects bad flags and run ids as usage errors", async () => {
    expect((await runCli(["server_app:app", "--no-such-flag"])).code).toBe(2);
    expect((await runCli(["--insecure", "--run-id", "abc"])).code).toBe(2);
    expect((await runCli(["--insecure", "--run-id", "9223372036854775808"])).code).toBe(2);
  });

  it("wants both --ssl-certfile and --ssl-keyfile, a key that belongs to the certificate, and TLS", async () => {
    const certOnly = await runCli([
      "server_app:app",
      "--dir",
      dir,
      "--root-certificates",
      fx.caCert,
      "--ssl-certfile",
      fx.serverappCert,
    ]);
    expect(certOnly.code).toBe(2);
    expect(fatal(certOnly)).toMatch(/needs both --ssl-certfile .* and --ssl-keyfile .*only --ssl-certfile was given/);
    const wrongKey = await runCli([
      "server_app:app",
      "--dir",
      dir,
      "--root-certificates",
      fx.caCert,
      "--ssl-certfile",
      fx.serverappCert,
      "--ssl-keyfile",
      fx.serverKey,
    ]);
    expect(wrongKey.code).toBe(2);
    expect(fatal(wrongKey)).toMatch(
      /Client private key ".*server\.key" does not belong to certificate ".*serverapp\.pem"/,
    );
    const insecure = await runCli([
      "server_app:app",
      "--dir",
      dir,
      "--insecure",
      "--ssl-certfile",
      fx.serverappCert,
      "--ssl-keyfile",
      fx.serverappKey,
    ]);
    expect(insecure.code).toBe(2);
    expect(fatal(insecure)).toContain("--insecure cannot be combined with --ssl-certfile/--ssl-keyfile");
  });

  it("prints help and exits 0", async () => {
    const r = await runCli(["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("--ssl-certfile");
    expect(r.stdout).toContain("--root-certificates");
    expect(r.stdout).toContain("--history-json");
  });
});

describe("flower-server-app runs", () => {
  it("runs the app against a SuperLink over TLS and prints the summary on stdout", async () => {
    const link = await startTestSuperLink(fx);
    const ca = fx.read(fx.caCert);
    const fitRes: FitRes = {
      status: { code: 0, message: "" },
      parameters: vectorParameters([1]),
      numExamples: 1,
      metrics: {},
    };
    const node = await FakeSuperNode.start(
      link.fleetAddress,
      ca,
      legacyNode({ getParameters: () => vectorParameters([0]), fit: () => fitRes }),
    );
    try {
      // --server is the deprecated alias; --superlink wins when both are given.
      const r = await runCli([
        "server_app:app",
        "--dir",
        dir,
        "--root-certificates",
        fx.caCert,
        "--server",
        "127.0.0.1:1",
        "--superlink",
        link.driverAddress,
        "--fab-id",
        "demo",
      ]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^\[SUMMARY\]\nRun finished 1 round\(s\) in \d+\.\d\ds\n$/);
      expect(r.logs.some((l) => l["event"] === "serverapp.run-created")).toBe(true);
      expect(r.logs.some((l) => String(l["msg"]).includes("`--server` will be ignored"))).toBe(true);
      expect(node.received.map((m) => m.metadata.messageType)).toEqual(["get_parameters", "train"]);
    } finally {
      await node.die();
      await link.close(0);
    }
  });

  it("exits 1 with a clear message when the SuperLink cannot be reached", async () => {
    const link = await startTestSuperLink(fx);
    const address = link.driverAddress;
    await link.close(0);
    const r = await runCli(["server_app:app", "--dir", dir, "--root-certificates", fx.caCert, "--superlink", address]);
    expect(r.code).toBe(1);
    expect(fatal(r)).toContain(`Cannot reach the SuperLink Driver API at ${address}`);
  }, 30_000);

  it("exits 130 when interrupted", async () => {
    const link = await startTestSuperLink(fx);
    try {
      const controller = new AbortController();
      const running = runCli(
        ["server_app:app", "--dir", dir, "--root-certificates", fx.caCert, "--superlink", link.driverAddress],
        controller.signal,
      );
      setTimeout(() => controller.abort(), 500);
      const r = await running;
      expect(r.code).toBe(130);
      expect(r.logs.some((l) => l["event"] === "serverapp.interrupted")).toBe(true);
    } finally {
      await link.close(0);
    }
  });
});
