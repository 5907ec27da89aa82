/**
 * Child processes for the benchmarks: the real daemons from bin/ (and bench workers), their
 * JSON log lines, readiness events, and CPU / memory figures read from /proc.
 * Child logs go to a file per child (kept for a failed run), never to the terminal.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, existsSync, readFileSync, type WriteStream } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

/** The repository root: the nearest parent of this file holding package.json (works from bench/ and dist-bench/bench/). */
export const REPO_ROOT = findRepoRoot(__dirname);

function findRepoRoot(start: string): string {
  let dir = resolve(start);
  for (;;) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "bin"))) return dir;
    const parent = resolve(dir, "..");
    if (parent === dir) throw new Error(`bench: cannot find the repository root above ${start}`);
    dir = parent;
  }
}

export type LogRecord = Record<string, unknown>;

export interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  /** Resolves with the exit code (128 for a signal). */
  exited: Promise<number>;
  /** Every stdout line (non-JSON lines of apps, e.g. a result line). */
  stdoutLines: string[];
  /** Calls `fn` for every JSON log record on stderr from now on. */
  onLog(fn: (rec: LogRecord, receivedAtMs: number) => void): void;
  /** Waits for the first log record (from now on, or already seen) matching `match`. */
  waitForLog(what: string, match: (rec: LogRecord) => boolean, timeoutMs?: number): Promise<LogRecord>;
  /** Path of the file holding this child's stdout and stderr. */
  logFile: string;
}

export interface StartOptions {
  args: string[];
  /** Where the child's output file goes. */
  logDir: string;
  cwd?: string;
  /** Extra node flags, e.g. --max-old-space-size. */
  nodeFlags?: string[];
}

const DEFAULT_READY_TIMEOUT_MS = 120_000;

/** Spawns `node <script> ...args` with piped stdout/stderr. */
export function startNodeScript(name: string, script: string, opts: StartOptions): Child {
  const proc = spawn(process.execPath, [...(opts.nodeFlags ?? []), script, ...opts.args], {
    cwd: opts.cwd ?? REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (proc.pid === undefined) throw new Error(`bench: could not start ${name}`);
  const logFile = join(opts.logDir, `${name}.log`);
  const out: WriteStream = createWriteStream(logFile);
  const listeners = new Set<(rec: LogRecord, at: number) => void>();
  const seen: LogRecord[] = [];
  const stdoutLines: string[] = [];
  createInterface({ input: proc.stderr }).on("line", (line) => {
    const at = Date.now();
    out.write(line + "\n");
    let rec: LogRecord;
    try {
      rec = JSON.parse(line) as LogRecord;
    } catch {
      return;
    }
    if (seen.length < 10_000) seen.push(rec);
    for (const fn of listeners) fn(rec, at);
  });
  createInterface({ input: proc.stdout }).on("line", (line) => {
    out.write(`[stdout] ${line}\n`);
    stdoutLines.push(line);
  });
  const exited = new Promise<number>((res) =>
    proc.on("exit", (code, signal) => {
      res(code ?? (signal ? 128 : 1));
    }),
  );
  void exited.then(() => setTimeout(() => out.end(), 100));
  const child: Child = {
    name,
    proc,
    pid: proc.pid,
    exited,
    stdoutLines,
    logFile,
    onLog: (fn) => {
      listeners.add(fn);
    },
    waitForLog: (what, match, timeoutMs = DEFAULT_READY_TIMEOUT_MS) =>
      new Promise<LogRecord>((res, rej) => {
        const early = seen.find(match);
        if (early) {
          res(early);
          return;
        }
        const timer = setTimeout(() => {
          listeners.delete(check);
          rej(new Error(`${what}: not seen after ${timeoutMs / 1000} s (see ${logFile})`));
        }, timeoutMs);
        const check = (rec: LogRecord): void => {
          if (!match(rec)) return;
          clearTimeout(timer);
          listeners.delete(check);
          res(rec);
        };
        listeners.add(check);
        void exited.then((code) => {
          clearTimeout(timer);
          listeners.delete(check);
          rej(new Error(`${name} exited with code ${code} before ${what} (see ${logFile})`));
        });
      }),
  };
  return child;
}

let daemonNodeFlags: string[] = [];

/** Node flags for every daemon started from now on (e.g. --cpu-prof for `--profile`). */
export function setDaemonNodeFlags(flags: string[]): void {
  daemonNodeFlags = [...flags];
}

/** The flags setDaemonNodeFlags set (bench workers that run daemons in-process use them too). */
export function daemonNodeFlagsInUse(): readonly string[] {
  return daemonNodeFlags;
}

/** Spawns a bin/ daemon (flower-superlink, flower-client-app, flower-server-app). */
export function startDaemon(name: string, bin: string, opts: StartOptions): Child {
  return startNodeScript(name, join(REPO_ROOT, "bin", bin), {
    ...opts,
    nodeFlags: [...daemonNodeFlags, ...(opts.nodeFlags ?? [])],
  });
}

export function isRunning(child: Child): boolean {
  return child.proc.exitCode === null && child.proc.signalCode === null;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when every child exited. */
export async function stopChildren(children: Child[], graceMs = 10_000): Promise<void> {
  const alive = children.filter(isRunning);
  for (const c of alive) c.proc.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((res) => {
    timer = setTimeout(res, graceMs);
  });
  await Promise.race([Promise.all(alive.map((c) => c.exited)), deadline]);
  clearTimeout(timer);
  const stubborn = alive.filter(isRunning);
  for (const c of stubborn) c.proc.kill("SIGKILL");
  await Promise.all(stubborn.map((c) => c.exited));
}

/** Fails as soon as any of `children` exits (for racing against the work being measured). */
export function failOnExit(children: Child[]): Promise<never> {
  return Promise.race(
    children.map((c) =>
      c.exited.then((code) =>
        Promise.reject(new Error(`${c.name} exited unexpectedly with code ${code} (see ${c.logFile})`)),
      ),
    ),
  );
}

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ, 100 on every Linux build that matters (getconf CLK_TCK)

/** User + system CPU time of a process so far, all its threads, in seconds (/proc/<pid>/stat). */
export function cpuSeconds(pid: number): number {
  return statCpuSeconds(`/proc/${pid}/stat`);
}

/**
 * User + system CPU time of a process's main thread so far, in seconds: for Node, the event loop
 * (V8's compiler and GC helpers, libuv's pool and worker threads run on threads of their own).
 */
export function mainThreadCpuSeconds(pid: number): number {
  return statCpuSeconds(`/proc/${pid}/task/${pid}/stat`);
}

function statCpuSeconds(path: string): number {
  const stat = readFileSync(path, "utf8");
  // The command name may contain spaces or parentheses: fields start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) / CLOCK_TICKS_PER_SECOND;
}

export interface MemoryInfo {
  /** Current resident set size, MiB. */
  rssMiB: number;
  /** Peak resident set size since the process started (VmHWM), MiB. */
  peakRssMiB: number;
}

/** RSS and peak RSS of a live process (/proc/<pid>/status). */
export function memoryInfo(pid: number): MemoryInfo {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status);
    if (!m) throw new Error(`bench: /proc/${pid}/status has no ${key}`);
    return Number(m[1]);
  };
  return { rssMiB: kib("VmRSS") / 1024, peakRssMiB: kib("VmHWM") / 1024 };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}

/** Progress messages go to stderr so the result table on stdout stays clean. */
export function say(line: string): void {
  process.stderr.write(`[bench] ${line}\n`);
}
