/**
 * Real TLS certificates and OpenSSH key pairs for tests, made by scripts/generate.sh (the same
 * recipe a user runs). jest's global setup (test/helpers/global-setup.ts) generates two sets
 * once per run, with ECDSA P-256 TLS keys, into the directory named by FLWR_TEST_FIXTURES; each
 * generateFixtures() call copies one of them into a fresh temporary directory (tests may edit
 * their copy). The first call in a test file gets set 0, the next set 1 (a different CA and
 * different keys), and so on in turn. Without the pool (or for more SuperNodes than it has) the
 * call runs generate.sh itself. generate.sh's default recipe (also ECDSA P-256) is tested by
 * test/superlink/generate-sh.test.ts and test/superlink/demo-credentials.test.ts.
 */
import { execFileSync, spawn } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const REPO_ROOT = resolve(__dirname, "..", "..");

/** The environment variable naming the shared fixture sets, set by the global setup. */
export const FIXTURE_POOL_ENV = "FLWR_TEST_FIXTURES";
/** Sets in the shared pool, and SuperNode key pairs in each. */
export const POOL_SETS = 2;
export const POOL_CLIENTS = 3;

export interface Fixtures {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  /** The separate CA for Driver API clients (--driver-api-client-ca), and the ServerApp's client certificate. */
  serverappCaCert: string;
  serverappCert: string;
  serverappKey: string;
  superlinkPrivateKey: string;
  superlinkPublicKey: string;
  clientPrivateKeys: string[];
  clientPublicKeys: string[];
  allowlistCsv: string;
  read(path: string): Buffer;
  cleanup(): void;
}

function generateArgs(numClients: number, dir: string): string[] {
  return [join(REPO_ROOT, "scripts", "generate.sh"), String(numClients), dir];
}

/** Runs scripts/generate.sh into `dir` without blocking (the global setup runs several at once). */
export function generateSet(dir: string, numClients: number, keyType: "ec" | "rsa"): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn("bash", generateArgs(numClients, dir), {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, FLWR_CERT_KEY: keyType },
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
    });
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code === 0) resolvePromise();
      else reject(new Error(`generate.sh exited with ${String(code)}: ${stderr}`));
    });
  });
}

/** Copies a pool set into `dir`, keeping only `numClients` SuperNode key pairs and an allowlist of exactly those. */
function copySet(from: string, dir: string, numClients: number): void {
  mkdirSync(join(dir, "certificates"));
  for (const name of readdirSync(join(from, "certificates")))
    copyFileSync(join(from, "certificates", name), join(dir, "certificates", name));
  mkdirSync(join(dir, "keys"));
  const keys = ["server_credentials", ...Array.from({ length: numClients }, (_, i) => `client_credentials_${i + 1}`)];
  for (const name of keys.flatMap((k) => [k, `${k}.pub`]))
    copyFileSync(join(from, "keys", name), join(dir, "keys", name));
  // As generate.sh writes it: the "type blob" of each .pub, comma-separated, on one line.
  const csv = keys
    .slice(1)
    .map((k) =>
      readFileSync(join(dir, "keys", `${k}.pub`), "utf8")
        .trim()
        .split(/\s+/)
        .slice(0, 2)
        .join(" "),
    )
    .join(",");
  writeFileSync(join(dir, "keys", "client_public_keys.csv"), `${csv}\n`);
}

let poolCalls = 0;

export function generateFixtures(numClients = 2): Fixtures {
  const dir = mkdtempSync(join(tmpdir(), "flwr-ts-fixtures-"));
  const pool = process.env[FIXTURE_POOL_ENV];
  if (pool !== undefined && existsSync(pool) && numClients <= POOL_CLIENTS) {
    copySet(join(pool, `set-${poolCalls++ % POOL_SETS}`), dir, numClients);
  } else {
    execFileSync("bash", generateArgs(numClients, dir), {
      stdio: "pipe",
      env: { ...process.env, FLWR_CERT_KEY: "ec" },
    });
  }
  const c = (f: string): string => join(dir, "certificates", f);
  const k = (f: string): string => join(dir, "keys", f);
  const clients = Array.from({ length: numClients }, (_, i) => i + 1);
  return {
    dir,
    caCert: c("ca.crt"),
    caKey: c("ca.key"),
    serverCert: c("server.pem"),
    serverKey: c("server.key"),
    serverappCaCert: c("serverapp-ca.crt"),
    serverappCert: c("serverapp.pem"),
    serverappKey: c("serverapp.key"),
    superlinkPrivateKey: k("server_credentials"),
    superlinkPublicKey: k("server_credentials.pub"),
    clientPrivateKeys: clients.map((i) => k(`client_credentials_${i}`)),
    clientPublicKeys: clients.map((i) => k(`client_credentials_${i}.pub`)),
    allowlistCsv: k("client_public_keys.csv"),
    read: (path: string) => readFileSync(path),
    cleanup: () => {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
