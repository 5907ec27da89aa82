/** `flower-client-app`'s command line, run in-process through `main(argv)`. */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Writable } from "node:stream";
import { main } from "../../src/cli/flower-client-app";

const CLIENT_INDEX = resolve(__dirname, "..", "..", "src", "client", "index.ts");

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "flwr-ts-cli-"));
  writeFileSync(
    join(dir, "client.js"),
    [
      `const { ClientApp } = require(${JSON.stringify(CLIENT_INDEX)});`,
      "exports.app = new ClientApp({ clientFn: () => ({}) });",
      "exports.makeApp = () => exports.app;",
      "exports.notAnApp = 42;",
      "exports.badFactory = () => 42;",
    ].join("\n"),
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  code: number;
  logs: Array<Record<string, unknown>>;
  stderr: string;
  stdout: string;
  text: string;
}

async function run(...args: string[]): Promise<Run> {
  const logs: Array<Record<string, unknown>> = [];
  let stderr = "";
  let stdout = "";
  const logDestination = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const line of chunk.toString().split("\n"))
        if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const code = await main(["node", "flower-client-app", ...args], {
    logDestination,
    writeErr: (s) => (stderr += s),
    writeOut: (s) => (stdout += s),
  });
  const text = logs.map((l) => String(l["msg"])).join("\n") + stderr;
  return { code, logs, stderr, stdout, text };
}

function closedPort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}

describe("flower-client-app command line", () => {
  it("prints help and exits 0", async () => {
    const r = await run("--help");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("--superlink <address>");
    expect(r.stdout).toContain("--node-config <pairs>");
  });

  it("requires the ClientApp argument", async () => {
    const r = await run("--insecure");
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/missing required argument 'client-app'/);
  });

  it("refuses --insecure together with --root-certificates (exit 2)", async () => {
    const r = await run("client:app", "--dir", dir, "--insecure", "--root-certificates", join(dir, "ca.crt"));
    expect(r.code).toBe(2);
    expect(r.text).toContain("Conflicting options: The '--insecure' flag disables HTTPS");
  });

  it("refuses --grpc-adapter as not supported by flwr-ts (exit 2)", async () => {
    const r = await run("client:app", "--dir", dir, "--insecure", "--grpc-adapter");
    expect(r.code).toBe(2);
    expect(r.text).toContain("--grpc-adapter is not supported by flwr-ts");
  });

  it("--rest needs an http:// or https:// URL and refuses flags that contradict its scheme (exit 2)", async () => {
    const bare = await run("client:app", "--dir", dir, "--insecure", "--rest", "--superlink", "127.0.0.1:9093");
    expect(bare.code).toBe(2);
    expect(bare.text).toContain("please provide `https://` or `http://` before the server address");
    const httpsInsecure = await run(
      "client:app",
      "--dir",
      dir,
      "--insecure",
      "--rest",
      "--superlink",
      "https://127.0.0.1:9093",
    );
    expect(httpsInsecure.code).toBe(2);
    expect(httpsInsecure.text).toContain("Conflicting options: --insecure with the https:// SuperLink URL");
    const httpAuth = await run(
      "client:app",
      "--dir",
      dir,
      "--rest",
      "--superlink",
      "http://127.0.0.1:9093",
      "--auth-supernode-private-key",
      join(dir, "k"),
      "--auth-supernode-public-key",
      join(dir, "k.pub"),
    );
    expect(httpAuth.code).toBe(2);
    expect(httpAuth.text).toContain("Authentication requires a secure connection: use an https:// SuperLink URL");
  });

  it("refuses two transports at once", async () => {
    const r = await run("client:app", "--insecure", "--grpc-rere", "--rest");
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/cannot be used with/);
  });

  it("requires both authentication keys or neither (exit 2)", async () => {
    const r = await run("client:app", "--dir", dir, "--auth-supernode-private-key", join(dir, "key"));
    expect(r.code).toBe(2);
    expect(r.text).toContain("Authentication requires file paths to both '--auth-supernode-private-key' and");
  });

  it("reports an unreadable key file clearly (exit 2)", async () => {
    const port = await closedPort();
    const r = await run(
      "client:app",
      "--dir",
      dir,
      "--superlink",
      `127.0.0.1:${port}`,
      "--auth-supernode-private-key",
      join(dir, "missing-key"),
      "--auth-supernode-public-key",
      join(dir, "missing-key.pub"),
    );
    expect(r.code).toBe(2);
    expect(r.text).toContain("missing-key");
  });

  it.each([
    ["a missing module", "nothere:app", /Cannot find module "nothere"/],
    ["an attribute that is not a ClientApp", "client:notAnApp", /is not a ClientApp/],
    ["a factory that returns something else", "client:badFactory", /did not return a ClientApp/],
    ["a malformed reference", "client", /expected MODULE:ATTRIBUTE/],
  ])("refuses %s (exit 2)", async (_what, ref, message) => {
    const r = await run(ref, "--dir", dir, "--insecure");
    expect(r.code).toBe(2);
    expect(r.text).toMatch(message);
  });

  it("refuses a malformed --node-config (exit 2)", async () => {
    const r = await run("client:app", "--dir", dir, "--insecure", "--node-config", "partition-id=zero");
    expect(r.code).toBe(2);
    expect(r.text).toContain("--node-config");
    expect(r.text).toContain("quote text values");
  });

  it.each([
    ["--max-retries", "-1"],
    ["--max-retries", "two"],
    ["--max-wait-time", "soon"],
    ["--poll-interval-ms", "1.5"],
  ])("refuses %s %s (exit 2)", async (flag, value) => {
    const r = await run("client:app", "--dir", dir, "--insecure", flag, value);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(flag);
  });

  it("connects to the deprecated --server address with a warning, and gives up after --max-retries (exit 1)", async () => {
    const port = await closedPort();
    const r = await run(
      "client:makeApp",
      "--dir",
      dir,
      "--insecure",
      "--server",
      `127.0.0.1:${port}`,
      "--max-retries",
      "0",
    );
    expect(r.code).toBe(1);
    expect(r.text).toContain("Passing flag --server is deprecated. Use --superlink instead.");
    expect(r.text).toMatch(new RegExp(`Giving up on CreateNode after 1 try .*127\\.0\\.0\\.1:${port}`));
  });

  it("prefers --superlink over --server when both are given", async () => {
    const serverPort = await closedPort();
    const superlinkPort = await closedPort();
    const r = await run(
      "client:app",
      "--dir",
      dir,
      "--insecure",
      "--server",
      `127.0.0.1:${serverPort}`,
      "--superlink",
      `127.0.0.1:${superlinkPort}`,
      "--max-wait-time",
      "0",
    );
    expect(r.code).toBe(1);
    expect(r.text).toContain("`--server` will be ignored");
    expect(r.text).toMatch(new RegExp(`Giving up on CreateNode .*127\\.0\\.0\\.1:${superlinkPort}`));
  });
});
