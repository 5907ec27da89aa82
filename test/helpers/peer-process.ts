/**
 * Child processes for multi-process tests: output kept for assertions and failure reports,
 * waits for a line or for the process to end by itself, and a SIGTERM-then-SIGKILL stop.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { connect, createServer } from "node:net";

export class Peer {
  readonly child: ChildProcess;
  output = "";
  readonly exited: Promise<number | null>;
  private waiters: Array<() => void> = [];

  constructor(
    readonly name: string,
    command: string,
    args: string[],
    env: NodeJS.ProcessEnv,
    cwd: string,
  ) {
    // Own process group, so that stop() reaches whatever the peer started.
    this.child = spawn(command, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"], detached: true });
    const collect = (chunk: Buffer): void => {
      this.output += chunk.toString("utf8");
      for (const w of [...this.waiters]) w();
    };
    this.child.stdout!.on("data", collect);
    this.child.stderr!.on("data", collect);
    this.exited = new Promise((resolve) => {
      this.child.on("exit", (code) => {
        for (const w of [...this.waiters]) w();
        resolve(code);
      });
    });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves with the first match of `pattern` in the output; rejects if the process ends first. */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const m = pattern.exec(this.output);
        if (m) {
          done(() => resolve(m));
          return;
        }
        if (!this.running) {
          done(() => reject(new Error(`${this.name} exited before ${pattern}:\n${this.tail()}`)));
          return;
        }
      };
      const timer = setTimeout(
        () => done(() => reject(new Error(`${this.name}: no ${pattern} within ${timeoutMs} ms:\n${this.tail()}`))),
        timeoutMs,
      );
      const done = (fn: () => void): void => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
        fn();
      };
      this.waiters.push(check);
      check();
    });
  }

  /** Waits for the process to end by itself; kills it and rejects after `timeoutMs`. */
  async waitForExit(timeoutMs: number): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.kill("SIGKILL");
        reject(new Error(`${this.name} did not exit by itself within ${timeoutMs} ms:\n${this.tail()}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM to the process group, SIGKILL if still alive after 10 s. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.kill("SIGTERM");
    const timer = setTimeout(() => this.kill("SIGKILL"), 10_000);
    await this.exited;
    clearTimeout(timer);
  }

  tail(lines = 60): string {
    return `--- ${this.name} (last ${lines} lines) ---\n` + this.output.split("\n").slice(-lines).join("\n");
  }

  private kill(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.child.pid!, signal);
    } catch {
      // Already gone.
    }
  }
}

/** A port that was free a moment ago (for peers that cannot report a port-0 binding). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once 127.0.0.1:port accepts TCP connections; rejects if `owner` exits first. */
export async function waitForTcp(port: number, owner: Peer, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect(port, "127.0.0.1");
      sock.once("connect", () => {
        sock.destroy();
        resolve(true);
      });
      sock.once("error", () => resolve(false));
    });
    if (ok) return;
    if (!owner.running) throw new Error(`${owner.name} exited before listening on ${port}:\n${owner.tail()}`);
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
