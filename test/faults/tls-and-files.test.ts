/**
 * TLS failures and malformed files at startup, with the real daemons: each refusal exits with
 * code 2, names the file or says what to fix, and starts nothing (no readiness line, no
 * database file created).
 * (A SuperNode with the wrong CA is in test/supernode/client-app-e2e; a missing key file, a
 * garbage certificate and garbage key bytes are in test/superlink/cli and superlink.e2e.)
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { type SuperLinkHandle, startSuperLink as startSuperLinkInProcess } from "../../src/superlink/superlink";
import { readServerTlsFiles } from "../../src/transport/tls";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { memoryLogger } from "../superlink/helpers";
import {
  type Proc,
  ensureDist,
  fatalText,
  isEvent,
  killAll,
  spawnBin,
  spawnServerApp,
  spawnSuperNode,
  startSuperLink,
  superlinkArgs,
  writeApps,
} from "./helpers";

jest.setTimeout(90_000);

let fx: Fixtures;
let otherFx: Fixtures;
let apps: { dir: string; cleanup(): void };
let expiredCert: string;
const closers: Array<() => unknown> = [];

beforeAll(() => {
  ensureDist();
  fx = generateFixtures(1);
  otherFx = generateFixtures(1);
  apps = writeApps();
  // The server's own CSR signed by its CA, valid until yesterday (OpenSSL 3.0 has no -not_after).
  expiredCert = join(fx.dir, "certificates", "expired.pem");
  execFileSync(
    "openssl",
    [
      "x509",
      "-req",
      "-in",
      join(fx.dir, "certificates", "server.csr"),
      "-CA",
      fx.caCert,
      "-CAkey",
      fx.caKey,
      "-CAcreateserial",
      "-out",
      expiredCert,
      "-days",
      "-1",
      "-sha256",
      "-extfile",
      join(__dirname, "..", "..", "certificates", "certificate.conf"),
      "-extensions",
      "req_ext",
    ],
    { stdio: "pipe" },
  );
}, 120_000);
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await killAll();
});
afterAll(() => {
  fx?.cleanup();
  otherFx?.cleanup();
  apps?.cleanup();
});

/** A refused start: exit 2, the fatal message, nothing started. */
async function expectRefused(p: Proc, message: string | RegExp): Promise<void> {
  expect(await p.exited).toBe(2);
  const fatal = fatalText(p);
  if (typeof message === "string") expect(fatal).toContain(message);
  else expect(fatal).toMatch(message);
  expect(p.logs.some(isEvent("superlink.ready"))).toBe(false);
  expect(p.logs.some(isEvent("supernode.ready"))).toBe(false);
  expect(p.text()).not.toMatch(/\n\s+at /); // a message, not a stack trace
}

describe("TLS", () => {
  test("the SuperLink refuses an expired server certificate, naming it", async () => {
    const args = superlinkArgs(fx, { auth: false });
    args[args.indexOf("--ssl-certfile") + 1] = expiredCert;
    await expectRefused(spawnBin("superlink", "flower-superlink", args), new RegExp(`${expiredCert}.*expired`));
  });

  test("a SuperNode facing an expired server certificate exits 2 with the certificate message", async () => {
    // Started through the library, which takes the material as given (the CLI refuses it).
    const tls = readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey });
    tls.cert = readFileSync(expiredCert);
    const link: SuperLinkHandle = await startSuperLinkInProcess(
      { driverApiAddress: "127.0.0.1:0", fleetApiAddress: "127.0.0.1:0", database: IN_MEMORY_DATABASE, tls },
      { logger: memoryLogger("warn").logger },
    );
    closers.push(() => link.close(0));
    const node = spawnBin("node-1", "flower-client-app", [
      "client:app",
      "--dir",
      apps.dir,
      "--superlink",
      link.fleetAddress,
      "--root-certificates",
      fx.caCert,
      "--max-retries",
      "3",
    ]);
    await expectRefused(node, /TLS certificate verification of the SuperLink at 127\.0\.0\.1:\d+ failed \(.*expired/);
  });

  test("a ServerApp with the wrong CA fails clearly instead of hanging; the SuperLink keeps serving", async () => {
    const link = await startSuperLink(superlinkArgs(fx, { auth: false }));
    const serverApp = spawnServerApp(fx, apps.dir, link.driverAddress, "app", otherFx.caCert);
    const code = await serverApp.exited;
    expect(code).not.toBe(0);
    expect(fatalText(serverApp)).toMatch(/certificate/i);
    expect(serverApp.stdout).toEqual([]);
    expect(link.proc.alive()).toBe(true);
  });

  // Flower-style retrying would wait out connectTimeoutMs and exit 1 "Cannot reach"; a wrong CA
  // is a configuration error no retry fixes.
  test("a ServerApp with the wrong CA exits 2 at once with the certificate hint (as the SuperNode does)", async () => {
    const link = await startSuperLink(superlinkArgs(fx, { auth: false }));
    const serverApp = spawnServerApp(fx, apps.dir, link.driverAddress, "app", otherFx.caCert);
    expect(await serverApp.exited).toBe(2);
    expect(fatalText(serverApp)).toMatch(
      /TLS certificate verification of the SuperLink at 127\.0\.0\.1:\d+ failed.*--root-certificates/,
    );
    expect(fatalText(serverApp)).not.toContain("gave up after");
  });
});

describe("malformed files at startup", () => {
  test("an allowlist CSV with a garbage line: exit 2 naming the file and row, no database created", async () => {
    const csv = join(fx.dir, "garbage.csv");
    writeFileSync(csv, `${readFileSync(fx.allowlistCsv, "utf8").trim()}\nthis is not a key\n`);
    const database = join(fx.dir, "never-created.db");
    await expectRefused(
      spawnBin("superlink", "flower-superlink", superlinkArgs(fx, { allowlistCsv: csv, database })),
      new RegExp(`${csv}.*row 2`),
    );
    expect(existsSync(database)).toBe(false);
  });

  test("a public key given as the SuperLink's private key: exit 2 naming the file, no database created", async () => {
    const args = superlinkArgs(fx, { database: join(fx.dir, "never-created-2.db") });
    args[args.indexOf("--auth-superlink-private-key") + 1] = fx.superlinkPublicKey;
    await expectRefused(spawnBin("superlink", "flower-superlink", args), fx.superlinkPublicKey);
    expect(existsSync(join(fx.dir, "never-created-2.db"))).toBe(false);
  });

  test("a public key given as a SuperNode's private key: exit 2 naming the file", async () => {
    const node = spawnSuperNode(fx, apps.dir, "127.0.0.1:9", 0, {
      keys: { privateKey: fx.clientPublicKeys[0]!, publicKey: fx.clientPublicKeys[0]! },
    });
    await expectRefused(node, fx.clientPublicKeys[0]!);
  });

  test("a private key given as the certificate: exit 2 naming the file", async () => {
    const args = superlinkArgs(fx, { auth: false });
    args[args.indexOf("--ssl-certfile") + 1] = fx.serverKey;
    await expectRefused(spawnBin("superlink", "flower-superlink", args), fx.serverKey);
  });

  test("a certificate given as the TLS private key: exit 2 naming the file", async () => {
    const args = superlinkArgs(fx, { auth: false });
    args[args.indexOf("--ssl-keyfile") + 1] = fx.serverCert;
    await expectRefused(spawnBin("superlink", "flower-superlink", args), fx.serverCert);
  });

  test("a key given as a SuperNode's --root-certificates: exit 2 naming the file", async () => {
    const node = spawnBin("node-1", "flower-client-app", [
      "client:app",
      "--dir",
      apps.dir,
      "--superlink",
      "127.0.0.1:9",
      "--root-certificates",
      fx.serverKey,
    ]);
    await expectRefused(node, fx.serverKey);
  });
});
