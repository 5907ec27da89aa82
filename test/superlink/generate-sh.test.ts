/**
 * scripts/generate.sh, run for real: the ServerApp client certificate (clientAuth only, from its
 * own CA) checked with `openssl verify`, and never replacing existing keys or certificates
 * without --force (the SuperLink hot-reloads the allowlist, so a silent overwrite would lock
 * out every live SuperNode at once).
 */
import { type SpawnSyncReturns, execFileSync, spawnSync } from "node:child_process";
import { X509Certificate, createHash, createPrivateKey } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT } from "../helpers/fixtures";

const SCRIPT = join(REPO_ROOT, "scripts", "generate.sh");
let dir: string;

function generate(...args: string[]): SpawnSyncReturns<string> {
  return spawnSync("bash", [SCRIPT, ...args], { encoding: "utf8" });
}

/** With FLWR_CERT_KEY=ec: ECDSA P-256 Fleet/Driver keys, generated in a fraction of RSA 4096's time. */
function generateEc(...args: string[]): SpawnSyncReturns<string> {
  return spawnSync("bash", [SCRIPT, ...args], { encoding: "utf8", env: { ...process.env, FLWR_CERT_KEY: "ec" } });
}

/** sha256 of every file under certificates/ and keys/, by relative path. */
function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const sub of ["certificates", "keys"]) {
    for (const name of readdirSync(join(root, sub)).sort()) {
      out[`${sub}/${name}`] = createHash("sha256")
        .update(readFileSync(join(root, sub, name)))
        .digest("hex");
    }
  }
  return out;
}

function verify(...args: string[]): { ok: boolean; output: string } {
  try {
    return { ok: true, output: execFileSync("openssl", ["verify", ...args], { encoding: "utf8", stdio: "pipe" }) };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, output: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "flwr-ts-generate-"));
  const r = generate("2", dir);
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
}, 120_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cert = (name: string): string => join(dir, "certificates", name);

describe("the ServerApp client certificate", () => {
  it("is signed by the ServerApp CA and valid for TLS client authentication", () => {
    const r = verify("-CAfile", cert("serverapp-ca.crt"), "-purpose", "sslclient", cert("serverapp.pem"));
    expect(r.output).toContain(": OK");
    expect(r.ok).toBe(true);
  });

  it("is not usable as a server certificate", () => {
    const r = verify("-CAfile", cert("serverapp-ca.crt"), "-purpose", "sslserver", cert("serverapp.pem"));
    expect(r.ok).toBe(false);
    expect(r.output).toContain("unsuitable certificate purpose");
  });

  it("comes from a CA of its own: the Fleet/Driver CA did not sign it, and the ServerApp CA did not sign the server certificate", () => {
    expect(verify("-CAfile", cert("ca.crt"), cert("serverapp.pem")).ok).toBe(false);
    expect(verify("-CAfile", cert("serverapp-ca.crt"), cert("server.pem")).ok).toBe(false);
    expect(verify("-CAfile", cert("ca.crt"), "-purpose", "sslserver", cert("server.pem")).ok).toBe(true);
    const ca = new X509Certificate(readFileSync(cert("serverapp-ca.crt")));
    expect(ca.ca).toBe(true);
    const leaf = new X509Certificate(readFileSync(cert("serverapp.pem")));
    expect(leaf.ca).toBe(false);
    expect(leaf.checkPrivateKey(createPrivateKey(readFileSync(cert("serverapp.key"))))).toBe(true);
  });
});

describe("the Fleet/Driver certificates", () => {
  it("are ECDSA P-256 by default (cheap TLS handshakes) and valid for localhost and 127.0.0.1", () => {
    const server = new X509Certificate(readFileSync(cert("server.pem")));
    expect(server.publicKey.asymmetricKeyType).toBe("ec");
    expect(server.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    expect(server.checkHost("localhost")).toBe("localhost");
    expect(server.checkIP("127.0.0.1")).toBe("127.0.0.1");
  });

  it("refuses an unknown FLWR_CERT_KEY before writing anything (exit 2)", () => {
    const other = mkdtempSync(join(tmpdir(), "flwr-ts-generate-"));
    try {
      const r = spawnSync("bash", [SCRIPT, "1", other], {
        encoding: "utf8",
        env: { ...process.env, FLWR_CERT_KEY: "dsa" },
      });
      expect(r.status).toBe(2);
      expect(r.stderr).toContain("FLWR_CERT_KEY must be 'rsa' or 'ec'");
      expect(readdirSync(other)).toEqual([]);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });
});

describe("existing files", () => {
  it("are never replaced without --force: exit 1, nothing written, the message says --force", () => {
    const before = snapshot(dir);
    const r = generate("2", dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("refusing to overwrite");
    expect(r.stderr).toContain("--force");
    expect(snapshot(dir)).toEqual(before);
  });

  it("a missing group is generated and the others are kept (an older checkout gets its ServerApp certificate)", () => {
    const before = snapshot(dir);
    for (const f of [
      "serverapp-ca.key",
      "serverapp-ca.crt",
      "serverapp.key",
      "serverapp.pem",
      "serverapp.csr",
      "serverapp-ca.srl",
    ]) {
      unlinkSync(cert(f));
    }
    const r = generate("2", dir);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("kept the existing");
    const after = snapshot(dir);
    for (const [path, hash] of Object.entries(before)) {
      if (path.includes("serverapp")) expect(after[path]).not.toEqual(hash);
      else expect(after[path]).toEqual(hash);
    }
    expect(verify("-CAfile", cert("serverapp-ca.crt"), "-purpose", "sslclient", cert("serverapp.pem")).ok).toBe(true);
  });

  it("a group with only some of its files is refused before anything is written", () => {
    unlinkSync(join(dir, "keys", "client_credentials_2.pub"));
    unlinkSync(cert("serverapp.pem"));
    const before = snapshot(dir);
    const r = generate("2", dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("SuperNode key set (N=2) is incomplete");
    expect(r.stderr).toMatch(/missing: .*client_credentials_2\.pub/);
    expect(r.stderr).toContain("ServerApp client-certificate set is incomplete");
    expect(snapshot(dir)).toEqual(before);
    expect(existsSync(cert("serverapp.pem"))).toBe(false);
  });

  it("--force replaces everything (here with FLWR_CERT_KEY=ec: ECDSA P-256 Fleet/Driver keys)", () => {
    const before = snapshot(dir);
    const r = generateEc("--force", "2", dir);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const after = snapshot(dir);
    for (const path of [
      "certificates/ca.crt",
      "certificates/serverapp.pem",
      "keys/server_credentials",
      "keys/client_credentials_1",
    ]) {
      expect(after[path]).toBeDefined();
      expect(after[path]).not.toEqual(before[path]);
    }
    expect(existsSync(join(dir, "keys", "client_credentials_2.pub"))).toBe(true);
    expect(verify("-CAfile", cert("serverapp-ca.crt"), "-purpose", "sslclient", cert("serverapp.pem")).ok).toBe(true);
    expect(verify("-CAfile", cert("ca.crt"), "-purpose", "sslserver", cert("server.pem")).ok).toBe(true);
    const server = new X509Certificate(readFileSync(cert("server.pem")));
    expect(server.publicKey.asymmetricKeyType).toBe("ec");
    expect(server.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
  }, 60_000);

  it("an unknown option is a usage error (exit 2)", () => {
    const r = generate("--frce", "2", dir);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("unknown option '--frce'");
  });
});
