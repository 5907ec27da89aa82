/**
 * A throw-away PostgreSQL server for the replicas demo and the tests: `initdb` into a fresh
 * temporary directory, `postgres` listening only on a Unix socket in that directory, stopped
 * and deleted afterwards. PostgreSQL refuses to run as root, so as root it runs as the
 * `postgres` system user (what the Debian `postgresql` package creates) through `runuser`.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { errorMessage } from "../core/errors";

export interface LocalPostgres {
  /** `postgresql://` URL of the database `flwr` (over the Unix socket). */
  url: string;
  /** URL of another database on the same server (created on first use of `createDatabase`). */
  createDatabase(name: string): Promise<string>;
  /** Pid of the postmaster (its backends are its children), for CPU accounting. */
  serverPid(): number;
  /** Stops the server (fast shutdown) and deletes its directory. Idempotent. */
  stop(): Promise<void>;
}

/** Where the PostgreSQL server binaries are: `pg_config --bindir`, else the newest /usr/lib/postgresql/N/bin. */
export function findPostgresBinDir(): string | undefined {
  const candidates: string[] = [];
  try {
    candidates.push(
      execFileSync("pg_config", ["--bindir"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim(),
    );
  } catch {
    // no pg_config on PATH
  }
  const root = "/usr/lib/postgresql";
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    candidates.push(...versions.map((v) => join(root, v, "bin")));
  }
  return candidates.find((dir) => existsSync(join(dir, "initdb")) && existsSync(join(dir, "postgres")));
}

/** Why a local server cannot be started here, or undefined when it can. */
export function localPostgresUnavailableReason(): string | undefined {
  if (findPostgresBinDir() === undefined)
    return "no PostgreSQL server binaries (initdb, postgres) found; install the postgresql package";
  if (process.getuid?.() === 0 && postgresUser() === undefined)
    return "running as root and there is no `postgres` user to run the server as";
  return undefined;
}

function postgresUser(): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(
      execFileSync("id", ["-u", "postgres"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim(),
    );
    const gid = Number(
      execFileSync("id", ["-g", "postgres"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim(),
    );
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : undefined;
  } catch {
    return undefined;
  }
}

/** A port number nobody listens on now (it names the socket file; no TCP listener is opened). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => {
        resolve(port);
      });
    });
  });
}

/** Starts a server; rejects with the server's output when it does not come up within 30 s. */
export async function startLocalPostgres(): Promise<LocalPostgres> {
  const binDir = findPostgresBinDir();
  if (binDir === undefined) throw new Error(localPostgresUnavailableReason());
  const asRoot = process.getuid?.() === 0;
  const user = asRoot ? postgresUser() : undefined;
  if (asRoot && user === undefined) throw new Error(localPostgresUnavailableReason());
  const dir = mkdtempSync(join(tmpdir(), "flwr-ts-postgres-"));
  chmodSync(dir, 0o700);
  if (user !== undefined) chownSync(dir, user.uid, user.gid);
  const run = (command: string, args: string[]): [string, string[]] =>
    user !== undefined ? ["runuser", ["-u", "postgres", "--", command, ...args]] : [command, args];
  const dataDir = join(dir, "data");
  const [initCmd, initArgs] = run(join(binDir, "initdb"), [
    "-D",
    dataDir,
    "-U",
    "postgres",
    "-A",
    "trust",
    "--no-sync",
    "-E",
    "UTF8",
  ]);
  try {
    execFileSync(initCmd, initArgs, { stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    const stderr = (err as { stderr?: Buffer }).stderr;
    throw new Error(`initdb failed: ${stderr === undefined ? errorMessage(err) : stderr.toString()}`, { cause: err });
  }
  const port = await freePort();
  // Unix socket only; fsync off: a throw-away server, only replicas crash in the tests.
  const [pgCmd, pgArgs] = run(join(binDir, "postgres"), [
    "-D",
    dataDir,
    "-k",
    dir,
    "-p",
    String(port),
    "-c",
    "listen_addresses=",
    "-c",
    "fsync=off",
    "-c",
    "max_connections=300",
  ]);
  const child: ChildProcess = spawn(pgCmd, pgArgs, { stdio: ["ignore", "pipe", "pipe"], detached: true });
  let output = "";
  child.stdout?.on("data", (c: Buffer) => (output += c.toString()));
  child.stderr?.on("data", (c: Buffer) => (output += c.toString()));
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => {
      resolve();
    });
  });
  const urlOf = (database: string): string =>
    `postgresql://postgres@localhost/${database}?host=${encodeURIComponent(dir)}&port=${port}`;

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(-child.pid, "SIGINT"); // fast shutdown of the whole group
      } catch {
        // already gone
      }
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {
          // already gone
        }
      }, 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const admin = async <T>(fn: (client: pg.Client) => Promise<T>): Promise<T> => {
    const client = new pg.Client({ connectionString: urlOf("postgres") });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await admin((c) => c.query("CREATE DATABASE flwr"));
      break;
    } catch (err) {
      if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
        await stop();
        throw new Error(`PostgreSQL did not start: ${errorMessage(err)}\n${output}`, { cause: err });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    url: urlOf("flwr"),
    serverPid: () => Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]),
    createDatabase: async (name) => {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
      await admin((c) => c.query(`CREATE DATABASE ${name}`));
      return urlOf(name);
    },
    stop,
  };
}
