/**
 * `npm run demo`: the full deployment on one machine, as a newcomer would run it by hand —
 * certificates and keys (generated if missing), a SuperLink with TLS, node authentication and
 * client certificates on the Driver API, two SuperNodes running the bundled example ClientApp,
 * and the example ServerApp (FedAvg).
 * Child logs are shown as text with a prefix; the ServerApp's history goes to stdout.
 * Every child is stopped when the run ends, fails, or the demo is interrupted.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { formatLogLine } from "../core/logger";
import { SYNTHETIC_SOURCE } from "../example/synthetic-data";

const REPO_ROOT = resolve(__dirname, "..", "..");
const NUM_SUPERNODES = 2;
const READY_TIMEOUT_MS = 60_000;

export interface Child {
  name: string;
  proc: ChildProcess;
  exited: Promise<number>;
}

function say(line: string): void {
  process.stderr.write(`[demo] ${line}\n`);
}

function tfjsNodeInstalled(): boolean {
  try {
    require.resolve("@tensorflow/tfjs-node");
    return true;
  } catch {
    return false;
  }
}

/** The files the demo's processes use, relative to the directory they run in. */
export function credentialFiles(): string[] {
  const files = ["certificates/ca.crt", "certificates/server.pem", "certificates/server.key"];
  files.push("certificates/serverapp-ca.crt", "certificates/serverapp.pem", "certificates/serverapp.key");
  files.push("keys/server_credentials", "keys/server_credentials.pub", "keys/client_public_keys.csv");
  for (let i = 1; i <= NUM_SUPERNODES; i++)
    files.push(`keys/client_credentials_${i}`, `keys/client_credentials_${i}.pub`);
  return files;
}

/**
 * Runs scripts/generate.sh when a file is missing. It fills in only the missing groups (an older
 * checkout gets its ServerApp certificate) and never replaces existing keys (no --force), so
 * SuperNodes started by hand with them keep working.
 */
export function ensureCredentials(root = REPO_ROOT): void {
  const missing = credentialFiles().filter((f) => !existsSync(join(root, f)));
  if (missing.length === 0) return;
  const what =
    missing.length === credentialFiles().length ? "no certificates or keys yet" : `missing ${missing.join(", ")}`;
  say(`certificates/ or keys/ incomplete (${what}): running scripts/generate.sh`);
  const r = spawnSync("bash", [join(REPO_ROOT, "scripts", "generate.sh"), String(NUM_SUPERNODES), root], {
    cwd: root,
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (r.status !== 0) throw new Error("scripts/generate.sh failed (see its message above)");
}

/** The SuperLink's flags: TLS, node authentication, and mutual TLS on the Driver API. */
export const DEMO_SUPERLINK_ARGS: readonly string[] = [
  "--ssl-ca-certfile",
  "certificates/ca.crt",
  "--ssl-certfile",
  "certificates/server.pem",
  "--ssl-keyfile",
  "certificates/server.key",
  "--driver-api-client-ca",
  "certificates/serverapp-ca.crt",
  "--auth-list-public-keys",
  "keys/client_public_keys.csv",
  "--auth-superlink-private-key",
  "keys/server_credentials",
  "--auth-superlink-public-key",
  "keys/server_credentials.pub",
  "--driver-api-address",
  "127.0.0.1:0",
  "--fleet-api-address",
  "127.0.0.1:0",
];

/**
 * SuperNode `i`'s flags (1-based): the example ClientApp on partition i-1 of `numPartitions`,
 * verifying the SuperLink at `superlink`, authenticating with keys/client_credentials_<i>.
 */
export function demoSuperNodeArgs(superlink: string, i: number, numPartitions: number): string[] {
  return [
    "client:app",
    "--root-certificates",
    "certificates/ca.crt",
    "--superlink",
    superlink,
    "--auth-supernode-private-key",
    `keys/client_credentials_${i}`,
    "--auth-supernode-public-key",
    `keys/client_credentials_${i}.pub`,
    "--node-config",
    `partition-id=${i - 1},num-partitions=${numPartitions}`,
  ];
}

/** The ServerApp's flags: verify the SuperLink, present the ServerApp client certificate. */
export function demoServerAppArgs(driverAddress: string, app = "server:app", dir = "./"): string[] {
  return [
    app,
    "--root-certificates",
    "certificates/ca.crt",
    "--ssl-certfile",
    "certificates/serverapp.pem",
    "--ssl-keyfile",
    "certificates/serverapp.key",
    "--dir",
    dir,
    "--superlink",
    driverAddress,
  ];
}

/** Spawns a bin/ daemon; its JSON log lines are echoed as text, and `onLog` sees each record. */
export function startChild(
  name: string,
  bin: string,
  args: string[],
  opts: { onLog?: (rec: Record<string, unknown>) => void; stdout?: "inherit" | "pipe" } = {},
): Child {
  const proc = spawn(process.execPath, [join(REPO_ROOT, "bin", bin), ...args], {
    cwd: REPO_ROOT,
    stdio: ["ignore", opts.stdout ?? "pipe", "pipe"],
  });
  const pad = name.padEnd(10);
  createInterface({ input: proc.stderr! }).on("line", (line) => {
    process.stderr.write(`${pad}| ${formatLogLine(line)}`);
    try {
      opts.onLog?.(JSON.parse(line) as Record<string, unknown>);
    } catch {
      /* not a JSON log line */
    }
  });
  if (proc.stdout) {
    createInterface({ input: proc.stdout }).on("line", (line) => process.stderr.write(`${pad}| ${line}\n`));
  }
  const exited = new Promise<number>((res) => proc.on("exit", (code, signal) => res(code ?? (signal ? 128 : 1))));
  return { name, proc, exited };
}

export function waitFor<T>(what: string, child: Child, probe: (resolve: (v: T) => void) => void): Promise<T> {
  return new Promise<T>((res, rej) => {
    const timer = setTimeout(
      () => rej(new Error(`${what}: not ready after ${READY_TIMEOUT_MS / 1000} s`)),
      READY_TIMEOUT_MS,
    );
    void child.exited.then((code) => rej(new Error(`${child.name} exited early with code ${code}`)));
    probe((v) => {
      clearTimeout(timer);
      res(v);
    });
  });
}

export async function stopGroup(group: Child[]): Promise<void> {
  const alive = group.filter((c) => c.proc.exitCode === null && c.proc.signalCode === null);
  for (const c of alive) c.proc.kill("SIGTERM");
  const deadline = new Promise<void>((res) => setTimeout(res, 10_000).unref());
  await Promise.race([Promise.all(alive.map((c) => c.exited)), deadline]);
  for (const c of alive) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
}

/** SuperNodes and ServerApp first, so they can still deregister; the SuperLink (first child) last. */
export async function stopAll(children: Child[]): Promise<void> {
  await stopGroup(children.slice(1));
  await stopGroup(children.slice(0, 1));
}

export async function main(): Promise<number> {
  const children: Child[] = [];
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
    say("interrupted: stopping all processes");
    void stopAll(children).then(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    ensureCredentials();
    say(`data: ${SYNTHETIC_SOURCE}; pass cifar-dir in --node-config for real CIFAR-10 (see README)`);
    say(
      `TensorFlow.js backend: ${tfjsNodeInstalled() ? "@tensorflow/tfjs-node is installed (used when its native library loads)" : "wasm, else pure-JS cpu (@tensorflow/tfjs-node is not installed; the ClientApp picks the fastest that starts)"}`,
    );
    let onReady: ((rec: Record<string, unknown>) => void) | undefined;
    const superlink = startChild("superlink", "flower-superlink", [...DEMO_SUPERLINK_ARGS], {
      onLog: (rec) => onReady?.(rec),
    });
    children.push(superlink);
    const ready = await waitFor<Record<string, unknown>>("SuperLink", superlink, (res) => {
      onReady = (rec) => {
        if (rec["event"] === "superlink.ready") res(rec);
      };
    });
    const fleet = String(ready["fleetAddress"]);
    const driver = String(ready["driverAddress"]);
    say(`SuperLink ready: Driver API ${driver}, Fleet API ${fleet}`);

    const nodesReady: Promise<unknown>[] = [];
    for (let i = 1; i <= NUM_SUPERNODES; i++) {
      let onNodeLog: ((rec: Record<string, unknown>) => void) | undefined;
      const node = startChild(`node-${i}`, "flower-client-app", demoSuperNodeArgs(fleet, i, NUM_SUPERNODES), {
        onLog: (rec) => onNodeLog?.(rec),
      });
      children.push(node);
      nodesReady.push(
        waitFor(`SuperNode ${i}`, node, (res) => {
          onNodeLog = (rec) => {
            if (rec["event"] === "supernode.ready") res(rec);
          };
        }),
      );
    }
    await Promise.all(nodesReady);
    say(`${NUM_SUPERNODES} SuperNodes connected; starting the ServerApp`);

    const serverApp = startChild("serverapp", "flower-server-app", demoServerAppArgs(driver), { stdout: "inherit" });
    children.push(serverApp);
    const code = await Promise.race([
      serverApp.exited,
      ...children
        .filter((c) => c !== serverApp)
        .map((c) => c.exited.then((x) => Promise.reject(new Error(`${c.name} exited unexpectedly with code ${x}`)))),
    ]);
    say(
      code === 0 ? "ServerApp finished; stopping SuperNodes and SuperLink" : `ServerApp failed with exit code ${code}`,
    );
    await stopAll(children);
    return code;
  } catch (err) {
    if (!interrupted) say(`failed: ${err instanceof Error ? err.message : String(err)}`);
    await stopAll(children);
    return 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

export function run(): void {
  void main().then((code) => process.exit(code));
}

if (require.main === module) run();
