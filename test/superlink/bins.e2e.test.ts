/**
 * What every bin does before its real work, as real child processes (dist/: run `npm run build`
 * first): `--version` prints the package version, and a listen address that is already taken
 * makes flower-superlink exit 2 with a message naming the flag to change (not exit 1 with a
 * stray grpc-js log line).
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { type Server, createServer } from "node:net";
import { join } from "node:path";
import { REPO_ROOT } from "../helpers/fixtures";

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runBin(bin: string, args: string[]): Promise<Run> {
  const proc = spawn(process.execPath, [join(REPO_ROOT, "bin", bin), ...args], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  proc.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
  return new Promise((resolve) =>
    proc.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

const fatal = (r: Run): string =>
  String(
    r.stderr
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((rec) => rec["level"] === 60)?.["msg"] ?? "",
  );

beforeAll(() => {
  if (!existsSync(join(REPO_ROOT, "dist", "cli", "flower-superlink.js")))
    throw new Error("dist/ is missing: run `npm run build` first");
});

describe("--version", () => {
  const version = (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string }).version;
  it.each(["flower-superlink", "flower-client-app", "flower-server-app"])(
    "%s --version prints the package version and exits 0",
    async (bin) => {
      const r = await runBin(bin, ["--version"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(`${version}\n`);
      expect(r.stderr).toBe("");
    },
  );
});

describe("a listen address already in use", () => {
  let blocker: Server;
  let taken: string;
  beforeAll(async () => {
    blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    taken = `127.0.0.1:${(blocker.address() as { port: number }).port}`;
  });
  afterAll(async () => new Promise<void>((resolve) => blocker.close(() => resolve())));

  it.each([
    ["--driver-api-address", ["--fleet-api-address", "127.0.0.1:0"]],
    ["--fleet-api-address", ["--driver-api-address", "127.0.0.1:0"]],
    ["--metrics-address", ["--driver-api-address", "127.0.0.1:0", "--fleet-api-address", "127.0.0.1:0"]],
  ])("%s: exit 2, the message names the flag, no stray grpc-js line", async (flag, others) => {
    const r = await runBin("flower-superlink", ["--insecure", ...others, flag, taken]);
    expect(r.code).toBe(2);
    const msg = fatal(r);
    expect(msg).toContain(`Cannot listen on ${taken} (${flag})`);
    expect(msg).toContain("already in use");
    expect(msg).toContain(`Pass another address or port with ${flag}`);
    expect(r.stderr).not.toContain("No address added out of total");
    expect(r.stderr.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("{"))).toEqual([]);
  });
});
