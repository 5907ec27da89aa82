/**
 * The SuperLink's fixed V8 heap growth (src/cli/heap-growth.ts): set unless the operator chose
 * one, and a flag this Node's V8 still knows (setFlagsFromString would ignore an unknown one).
 */
import { spawnSync } from "node:child_process";
import { SUPERLINK_HEAP_GROWING_PERCENT, heapGrowthFlag } from "../../src/cli/heap-growth";

test("the flag is set by default and left to the operator's choice on the command line or in NODE_OPTIONS", () => {
  expect(heapGrowthFlag([], undefined)).toBe(`--heap-growing-percent=${SUPERLINK_HEAP_GROWING_PERCENT}`);
  expect(heapGrowthFlag(["--max-old-space-size=2048"], "--enable-source-maps")).toBeDefined();
  expect(heapGrowthFlag(["--heap-growing-percent=50"], undefined)).toBeUndefined();
  expect(heapGrowthFlag([], "--enable-source-maps --heap_growing_percent=10")).toBeUndefined();
});

test("this Node's V8 accepts the flag", () => {
  const flag = heapGrowthFlag([], undefined)!;
  const known = spawnSync(process.execPath, [flag, "-e", "0"], { encoding: "utf8" });
  expect(known.stderr).toBe("");
  expect(known.status).toBe(0);
  // A flag V8 does not know is refused the same way, so the check above can fail.
  const unknown = spawnSync(process.execPath, ["--heap-growing-percentage-typo=30", "-e", "0"], { encoding: "utf8" });
  expect(unknown.status).not.toBe(0);
});
