/** Real keys made with ssh-keygen/openssl in a temporary directory, for the auth tests. */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface KeyDir {
  dir: string;
  /** Runs `ssh-keygen -q -N <passphrase> -C "" -f <dir>/<name> <args>`; returns the private key path. */
  sshKeygen(name: string, args: string[], passphrase?: string): string;
  read(name: string): string;
  path(name: string): string;
  cleanup(): void;
}

export function makeKeyDir(): KeyDir {
  const dir = mkdtempSync(join(tmpdir(), "flwr-ts-auth-keys-"));
  return {
    dir,
    sshKeygen(name, args, passphrase = "") {
      const file = join(dir, name);
      execFileSync("ssh-keygen", ["-q", "-N", passphrase, "-C", "", "-f", file, ...args], { stdio: "pipe" });
      return file;
    },
    read: (name) => readFileSync(join(dir, name), "utf8"),
    path: (name) => join(dir, name),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** The `type base64` part of an OpenSSH .pub file, as generate.sh puts it into the CSV. */
export function csvElementOf(pubFile: string): string {
  const [type, blob] = readFileSync(pubFile, "utf8").trim().split(/\s+/);
  return `${type} ${blob}`;
}

export function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { stdio: "pipe" }).toString();
}
