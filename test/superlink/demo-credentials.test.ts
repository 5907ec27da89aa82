/**
 * `npm run demo`'s credentials and flags, without the 30 s training run: it generates
 * certificates and keys only when some are missing (a fresh clone, an older checkout without
 * the ServerApp certificate) and never replaces existing ones; its SuperLink requires the
 * ServerApp client certificate on the Driver API and its ServerApp presents it. Real processes
 * from dist/ (run `npm run build` first), in a temporary directory laid out like the repository.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { DEMO_SUPERLINK_ARGS, credentialFiles, demoServerAppArgs, ensureCredentials } from "../../src/cli/demo";
import { REPO_ROOT } from "../helpers/fixtures";

let root: string;
const children: ChildProcess[] = [];

beforeAll(() => {
  if (!existsSync(join(REPO_ROOT, "dist", "cli", "flower-superlink.js")))
    throw new Error("dist/ is missing: run `npm run build` first");
  root = mkdtempSync(join(tmpdir(), "flwr-ts-demo-"));
});
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  rmSync(root, { recursive: true, force: true });
});

const hashes = (): string[] =>
  credentialFiles().map((f) =>
    createHash("sha256")
      .update(readFileSync(join(root, f)))
      .digest("hex"),
  );

describe("ensureCredentials", () => {
  it("generates every file the demo needs on a fresh clone", () => {
    ensureCredentials(root);
    for (const f of credentialFiles()) expect(existsSync(join(root, f))).toBe(true);
    expect(credentialFiles()).toEqual(
      expect.arrayContaining([
        "certificates/serverapp-ca.crt",
        "certificates/serverapp.pem",
        "certificates/serverapp.key",
      ]),
    );
  }, 60_000);

  it("changes nothing on a second run", () => {
    const before = hashes();
    ensureCredentials(root);
    expect(hashes()).toEqual(before);
  });

  it("on an older checkout without the ServerApp certificate, adds it and keeps the existing keys", () => {
    const before = hashes();
    for (const f of ["serverapp-ca.key", "serverapp-ca.crt", "serverapp.key", "serverapp.pem"])
      unlinkSync(join(root, "certificates", f));
    ensureCredentials(root);
    const after = hashes();
    credentialFiles().forEach((f, i) => {
      if (f.includes("serverapp")) expect(after[i]).not.toEqual(before[i]);
      else expect(after[i]).toEqual(before[i]);
    });
  }, 60_000);
});

describe("the demo's flags", () => {
  it("give the SuperLink the ServerApp CA and the ServerApp its client certificate", () => {
    const flag = (args: readonly string[], name: string): string | undefined => args[args.indexOf(name) + 1];
    expect(flag(DEMO_SUPERLINK_ARGS, "--driver-api-client-ca")).toBe("certificates/serverapp-ca.crt");
    const serverApp = demoServerAppArgs("127.0.0.1:9091");
    expect(serverApp[0]).toBe("server:app");
    expect(flag(serverApp, "--ssl-certfile")).toBe("certificates/serverapp.pem");
    expect(flag(serverApp, "--ssl-keyfile")).toBe("certificates/serverapp.key");
    expect(flag(serverApp, "--superlink")).toBe("127.0.0.1:9091");
    expect(serverApp).not.toContain("--server");
  });

  it("work together: the ServerApp is admitted with them and refused without its certificate", async () => {
    const serverModule = JSON.stringify(join(REPO_ROOT, "dist", "server", "index.js"));
    writeFileSync(
      join(root, "probe_app.js"),
      `const { ServerApp } = require(${serverModule});\n` +
        `exports.app = new ServerApp({ main: async (driver) => { console.log("nodes seen: " + (await driver.getNodeIds()).length); } });\n`,
    );
    const link = spawn(process.execPath, [join(REPO_ROOT, "bin", "flower-superlink"), ...DEMO_SUPERLINK_ARGS], {
      cwd: root,
      stdio: ["ignore", "ignore", "pipe"],
    });
    children.push(link);
    const exited = new Promise<void>((resolve) => link.on("exit", () => resolve()));
    try {
      const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
        createInterface({ input: link.stderr }).on("line", (line) => {
          if (line.includes('"superlink.ready"')) resolve(JSON.parse(line) as Record<string, unknown>);
        });
        void exited.then(() => reject(new Error("the demo's SuperLink exited early")));
      });
      expect(ready["driverApiClientCertificates"]).toBe(true);
      expect(ready["auth"]).toBe(true);
      const args = demoServerAppArgs(String(ready["driverAddress"]), "probe_app:app", root);
      const admitted = await runServerApp(args);
      expect(admitted.code).toBe(0);
      expect(admitted.stdout).toContain("nodes seen: 0");
      const withoutCert = args.filter(
        (a, i) =>
          !["--ssl-certfile", "--ssl-keyfile"].includes(a) &&
          !["--ssl-certfile", "--ssl-keyfile"].includes(args[i - 1]!),
      );
      const refused = await runServerApp(withoutCert);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain("requires a client certificate");
    } finally {
      link.kill("SIGTERM");
      await exited;
    }
  });
});

function runServerApp(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(process.execPath, [join(REPO_ROOT, "bin", "flower-server-app"), ...args], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(proc);
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
