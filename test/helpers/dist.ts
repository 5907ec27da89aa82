/**
 * dist/, which e2e tests spawn (bin/* runs the compiled code, as users do). Only jest's global
 * setup builds it; a test never does, since rewriting dist/ while another worker's child process
 * loads it makes that test flaky.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "./fixtures";

const BUILT = join(REPO_ROOT, "dist", "cli", "flower-superlink.js");
/** The browser SuperNode's bundle (scripts/build-browser.js), served by --rest-serve-browser-client. */
export const BROWSER_BUNDLE = join(REPO_ROOT, "dist", "browser", "flwr-browser.js");

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/** True when dist/ is missing or older than some file under src/. */
export function distIsStale(): boolean {
  const newest = newestMtime(join(REPO_ROOT, "src"));
  return [BUILT, BROWSER_BUNDLE].some((f) => !existsSync(f) || statSync(f).mtimeMs < newest);
}

/** `npm run build`'s compiler run; type errors elsewhere do not stop tsc from emitting, so they are ignored here. */
export function buildDist(): void {
  try {
    execFileSync(
      process.execPath,
      [join(REPO_ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json"],
      {
        cwd: REPO_ROOT,
        stdio: "pipe",
      },
    );
  } catch {
    // The tests tell what is missing.
  }
  try {
    execFileSync(process.execPath, [join(REPO_ROOT, "scripts", "build-browser.js")], { cwd: REPO_ROOT, stdio: "pipe" });
  } catch {
    // test/browser tells what is missing.
  }
}

/** Throws unless dist/ has been built (by `npm run build` or the global setup). */
export function requireDist(): void {
  if (!existsSync(BUILT)) throw new Error("dist/ is missing: run `npm run build` first");
}
