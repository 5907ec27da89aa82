/** Runs JavaScript in a child Node process (from the repo root), killed after a timeout. */
import { spawn } from "node:child_process";
import { REPO_ROOT } from "./fixtures";

export interface ScriptResult {
  /** null when the script was killed at the timeout. */
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * `node -e script ...args`. For code that may hang for good (e.g. a deadlocked HTTP/2 session),
 * which inside jest would keep it from exiting.
 */
export async function runNodeScript(script: string, args: string[], timeoutMs: number): Promise<ScriptResult> {
  const child = spawn(process.execPath, ["-e", script, ...args], { cwd: REPO_ROOT });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve)).finally(() =>
    clearTimeout(timer),
  );
  return { code, stdout, stderr };
}
