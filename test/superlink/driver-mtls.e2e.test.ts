/**
 * Mutual TLS on the Driver API, with real processes (bin/ from dist/: run `npm run build`
 * first) and real certificates from scripts/generate.sh plus a few made here with openssl:
 * flower-superlink --driver-api-client-ca admits a ServerApp presenting the generated
 * serverapp.pem and refuses one with no certificate, a self-signed one, one from another CA and
 * an expired one, each with a clear message on the ServerApp side. The Fleet API still takes
 * SuperNodes without client certificates. Without the option, a Driver API beyond loopback is
 * warned about.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { InvalidConfigError } from "../../src/core/errors";
import { silentLogger } from "../../src/core/logger";
import { FleetClient } from "../../src/proto/flwr/proto/fleet";
import { GrpcDriver } from "../../src/serverapp/grpc-driver";
import { startSuperLink } from "../../src/superlink/superlink";
import { createClient, unaryCall } from "../../src/transport/channel";
import { probeClientCertificate } from "../../src/transport/client-certificate-refusal";
import { channelCredentials, readServerTlsFiles } from "../../src/transport/tls";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";

let fx: Fixtures;
let dir: string;
const children: ChildProcess[] = [];

/** Extra certificates: self-signed, from another CA, and expired but from the right CA. */
const extra = { selfCert: "", selfKey: "", otherCert: "", otherKey: "", expiredCert: "", expiredKey: "" };

function openssl(...args: string[]): void {
  execFileSync("openssl", args, { stdio: "pipe" });
}

beforeAll(() => {
  if (!existsSync(join(REPO_ROOT, "dist", "cli", "flower-superlink.js")))
    throw new Error("dist/ is missing: run `npm run build` first");
  fx = generateFixtures(1);
  dir = mkdtempSync(join(tmpdir(), "flwr-ts-driver-mtls-"));
  const f = (name: string): string => join(dir, name);
  const ecKey = (path: string): void => openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path);
  ecKey(f("self.key"));
  openssl(
    "req",
    "-new",
    "-x509",
    "-key",
    f("self.key"),
    "-subj",
    "/CN=self-signed",
    "-days",
    "10",
    "-out",
    f("self.pem"),
  );
  ecKey(f("other-ca.key"));
  openssl(
    "req",
    "-new",
    "-x509",
    "-key",
    f("other-ca.key"),
    "-subj",
    "/CN=other CA",
    "-days",
    "10",
    "-out",
    f("other-ca.crt"),
  );
  ecKey(f("client.key"));
  openssl("req", "-new", "-key", f("client.key"), "-subj", "/CN=client", "-out", f("client.csr"));
  openssl(
    "x509",
    "-req",
    "-in",
    f("client.csr"),
    "-CA",
    f("other-ca.crt"),
    "-CAkey",
    f("other-ca.key"),
    "-set_serial",
    "2",
    "-days",
    "10",
    "-out",
    f("other.pem"),
  );
  // -days -1: notAfter a day before notBefore, so already expired; signed by the right CA.
  openssl(
    "x509",
    "-req",
    "-in",
    f("client.csr"),
    "-CA",
    fx.serverappCaCert,
    "-CAkey",
    join(fx.dir, "certificates", "serverapp-ca.key"),
    "-set_serial",
    "3",
    "-days",
    "-1",
    "-out",
    f("expired.pem"),
  );
  Object.assign(extra, {
    selfCert: f("self.pem"),
    selfKey: f("self.key"),
    otherCert: f("other.pem"),
    otherKey: f("client.key"),
    expiredCert: f("expired.pem"),
    expiredKey: f("client.key"),
  });
  const serverModule = JSON.stringify(join(REPO_ROOT, "dist", "server", "index.js"));
  writeFileSync(
    f("server_app.js"),
    `const { ServerApp } = require(${serverModule});\n` +
      `exports.app = new ServerApp({ main: async (driver) => { console.log("nodes seen: " + (await driver.getNodeIds()).length); } });\n`,
  );
}, 120_000);

afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  fx?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a bin to its end (killed after `timeoutMs`). */
function runBin(bin: string, args: string[], timeoutMs = 30_000): Promise<Run> {
  const proc = spawn(process.execPath, [join(REPO_ROOT, "bin", bin), ...args], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(proc);
  let stdout = "";
  let stderr = "";
  proc.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  return new Promise((resolve) =>
    proc.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

/** The message of the fatal (level 60) JSON log line a bin wrote to stderr. */
function fatal(r: Run): string {
  for (const line of r.stderr.split("\n")) {
    try {
      const rec = JSON.parse(line) as Record<string, unknown>;
      if (rec["level"] === 60) return String(rec["msg"]);
    } catch {
      /* not JSON */
    }
  }
  return "";
}

interface SuperLinkChild {
  proc: ChildProcess;
  ready: Record<string, unknown>;
  logs: Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

/** Starts bin/flower-superlink and waits for its ready line. */
async function startSuperLinkBin(args: string[]): Promise<SuperLinkChild> {
  const proc = spawn(process.execPath, [join(REPO_ROOT, "bin", "flower-superlink"), ...args], {
    cwd: dir,
    stdio: ["ignore", "ignore", "pipe"],
  });
  children.push(proc);
  const logs: Array<Record<string, unknown>> = [];
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: proc.stderr }).on("line", (line) => {
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        logs.push(rec);
        if (rec["event"] === "superlink.ready") resolve(rec);
      } catch {
        /* not JSON */
      }
    });
    void exited.then((code) => reject(new Error(`flower-superlink exited with ${code}: ${JSON.stringify(logs)}`)));
  });
  return {
    proc,
    ready,
    logs,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      await exited;
    },
  };
}

const tlsArgs = (): string[] => [
  "--ssl-ca-certfile",
  fx.caCert,
  "--ssl-certfile",
  fx.serverCert,
  "--ssl-keyfile",
  fx.serverKey,
];
const loopback = ["--driver-api-address", "127.0.0.1:0", "--fleet-api-address", "127.0.0.1:0"];
const isOpenWarning = (l: Record<string, unknown>): boolean => l["event"] === "superlink.driver-api-open";

describe("flower-superlink --driver-api-client-ca", () => {
  let link: SuperLinkChild;
  let driver: string;
  beforeAll(async () => {
    link = await startSuperLinkBin([...tlsArgs(), "--driver-api-client-ca", fx.serverappCaCert, ...loopback]);
    driver = String(link.ready["driverAddress"]);
    expect(link.ready["driverApiClientCertificates"]).toBe(true);
  });
  afterAll(async () => link?.stop());

  const serverApp = (extraArgs: string[]): Promise<Run> =>
    runBin("flower-server-app", [
      "server_app:app",
      "--dir",
      dir,
      "--root-certificates",
      fx.caCert,
      "--superlink",
      driver,
      ...extraArgs,
    ]);

  it("admits a ServerApp presenting the generated serverapp certificate", async () => {
    const r = await serverApp(["--ssl-certfile", fx.serverappCert, "--ssl-keyfile", fx.serverappKey]);
    expect(r.stderr).not.toContain('"level":60');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("nodes seen: 0");
  });

  it("refuses a ServerApp without a client certificate: exit 2, a hint about --ssl-certfile/--ssl-keyfile", async () => {
    const r = await serverApp([]);
    expect(r.code).toBe(2);
    expect(fatal(r)).toContain("requires a client certificate (mutual TLS) and none was given");
    expect(fatal(r)).toContain("pass --ssl-certfile/--ssl-keyfile");
    expect(r.stdout).not.toContain("nodes seen");
  });

  it.each([
    ["self-signed", () => [extra.selfCert, extra.selfKey]],
    ["signed by another CA", () => [extra.otherCert, extra.otherKey]],
  ])("refuses a ServerApp whose certificate is %s: exit 2, a clear message", async (_what, files) => {
    const [cert, key] = files();
    const r = await serverApp(["--ssl-certfile", cert!, "--ssl-keyfile", key!]);
    expect(r.code).toBe(2);
    expect(fatal(r)).toContain("refused the client certificate given with --ssl-certfile/--ssl-keyfile");
    expect(fatal(r)).toContain("--driver-api-client-ca");
    expect(r.stdout).not.toContain("nodes seen");
  });

  it("refuses an expired certificate from the right CA (server side), and the ServerApp says so before dialling", async () => {
    const read = (p: string): Buffer => fx.read(p);
    // The SuperLink's own verdict, by a raw TLS handshake (no flwr-ts client-side checks).
    expect(await probeClientCertificate(driver, { cert: read(extra.expiredCert), key: read(extra.expiredKey) })).toBe(
      "refused",
    );
    expect(await probeClientCertificate(driver, { cert: read(extra.otherCert), key: read(extra.otherKey) })).toBe(
      "refused",
    );
    expect(await probeClientCertificate(driver, { cert: read(fx.serverappCert), key: read(fx.serverappKey) })).toBe(
      "accepted",
    );
    const r = await serverApp(["--ssl-certfile", extra.expiredCert, "--ssl-keyfile", extra.expiredKey]);
    expect(r.code).toBe(2);
    expect(fatal(r)).toMatch(/Client certificate "[^"]+expired\.pem" expired on/);
  });

  it("keeps the Fleet API open to SuperNodes without client certificates", async () => {
    const fleet = createClient(
      FleetClient,
      String(link.ready["fleetAddress"]),
      channelCredentials({ rootCertificates: fx.read(fx.caCert) }),
      {
        "grpc.ssl_target_name_override": "localhost",
      },
    );
    try {
      const { response } = await unaryCall(fleet.createNode.bind(fleet), { pingInterval: 30 });
      expect(response.node?.nodeId).toBeDefined();
    } finally {
      fleet.close();
    }
  });

  it("does not warn about an open Driver API", () => {
    expect(link.logs.some(isOpenWarning)).toBe(false);
  });
});

describe("flower-superlink without --driver-api-client-ca", () => {
  it("warns when the Driver API listens on 0.0.0.0, and still serves a ServerApp without a client certificate", async () => {
    const link = await startSuperLinkBin([
      ...tlsArgs(),
      "--driver-api-address",
      "0.0.0.0:0",
      "--fleet-api-address",
      "127.0.0.1:0",
    ]);
    try {
      const warning = link.logs.find(isOpenWarning);
      expect(warning?.["level"]).toBe(40);
      expect(String(warning?.["msg"])).toContain("--driver-api-client-ca");
      const port = String(link.ready["driverAddress"]).split(":").pop();
      const args = [
        "server_app:app",
        "--dir",
        dir,
        "--root-certificates",
        fx.caCert,
        "--superlink",
        `127.0.0.1:${port}`,
      ];
      const r = await runBin("flower-server-app", args);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("nodes seen: 0");
      // A ServerApp already given its certificate works too (ServerApps can be set up first, then the SuperLink).
      const withCert = await runBin("flower-server-app", [
        ...args,
        "--ssl-certfile",
        fx.serverappCert,
        "--ssl-keyfile",
        fx.serverappKey,
      ]);
      expect(withCert.code).toBe(0);
    } finally {
      await link.stop();
    }
  });

  it("does not warn when the Driver API listens on loopback only", async () => {
    const link = await startSuperLinkBin(["--insecure", ...loopback]);
    try {
      expect(link.logs.some(isOpenWarning)).toBe(false);
    } finally {
      await link.stop();
    }
  });
});

describe("the library: startSuperLink({ driverApiClientCa }) and GrpcDriver({ clientCertificate })", () => {
  it("connects with the ServerApp certificate and is refused, as InvalidConfigError, without one", async () => {
    const link = await startSuperLink(
      {
        driverApiAddress: "127.0.0.1:0",
        fleetApiAddress: "127.0.0.1:0",
        database: IN_MEMORY_DATABASE,
        tls: readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey }),
        driverApiClientCa: fx.read(fx.serverappCaCert),
      },
      { logger: silentLogger() },
    );
    try {
      const rootCertificates = fx.read(fx.caCert);
      const driver = await GrpcDriver.connect({
        superlink: link.driverAddress,
        rootCertificates,
        clientCertificate: { cert: fx.read(fx.serverappCert), key: fx.read(fx.serverappKey) },
      });
      expect(await driver.getNodeIds()).toEqual([]);
      driver.close();
      const refused = GrpcDriver.connect({ superlink: link.driverAddress, rootCertificates, connectTimeoutMs: 5_000 });
      await expect(refused).rejects.toBeInstanceOf(InvalidConfigError);
      await expect(refused).rejects.toThrow(/requires a client certificate.*clientCertificate option/);
      const wrongCa = GrpcDriver.connect({
        superlink: link.driverAddress,
        rootCertificates,
        connectTimeoutMs: 5_000,
        clientCertificate: { cert: fx.read(extra.otherCert), key: fx.read(extra.otherKey) },
      });
      await expect(wrongCa).rejects.toThrow(/refused the client certificate/);
    } finally {
      await link.close(0);
    }
  });

  it("refuses client certificates without TLS", async () => {
    await expect(
      startSuperLink(
        {
          driverApiAddress: "127.0.0.1:0",
          fleetApiAddress: "127.0.0.1:0",
          database: IN_MEMORY_DATABASE,
          driverApiClientCa: fx.read(fx.serverappCaCert),
        },
        { logger: silentLogger() },
      ),
    ).rejects.toThrow(/requires TLS/);
  });
});
