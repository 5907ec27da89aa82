/**
 * Real TLS certificates and OpenSSH key pairs for tests, made by scripts/generate.sh into a
 * fresh temporary directory (the same recipe a user runs).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const REPO_ROOT = resolve(__dirname, "..", "..");

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

export function generateFixtures(numClients = 2): Fixtures {
  const dir = mkdtempSync(join(tmpdir(), "flwr-ts-fixtures-"));
  execFileSync("bash", [join(REPO_ROOT, "scripts", "generate.sh"), String(numClients), dir], { stdio: "pipe" });
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
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
