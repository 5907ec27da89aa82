/**
 * The SuperLink's capped V8 heap growth (src/cli/heap-growth.ts): on while the heap is large,
 * unless the operator chose a growth, and flags this Node's V8 still knows (setFlagsFromString
 * would ignore an unknown one).
 */
import { spawnSync } from "node:child_process";
import {
  HEAP_GROWTH_CAP_FROM_BYTES,
  HEAP_GROWTH_CAP_UNTIL_BYTES,
  SUPERLINK_HEAP_GROWING_PERCENT,
  heapGrowthCapped,
  heapGrowthFlag,
} from "../../src/cli/heap-growth";

test("the flag is set by default and left to the operator's choice on the command line or in NODE_OPTIONS", () => {
  expect(heapGrowthFlag([], undefined)).toBe(`--heap-growing-percent=${SUPERLINK_HEAP_GROWING_PERCENT}`);
  expect(heapGrowthFlag(["--max-old-space-size=2048"], "--enable-source-maps")).toBeDefined();
  expect(heapGrowthFlag(["--heap-growing-percent=50"], undefined)).toBeUndefined();
  expect(heapGrowthFlag([], "--enable-source-maps --heap_growing_percent=10")).toBeUndefined();
});

test("growth is capped from a large heap on and released only well below it", () => {
  expect(heapGrowthCapped(false, HEAP_GROWTH_CAP_FROM_BYTES - 1)).toBe(false);
  expect(heapGrowthCapped(false, HEAP_GROWTH_CAP_FROM_BYTES)).toBe(true);
  // Between the two thresholds the state stays as it is (no flapping at one threshold).
  const between = (HEAP_GROWTH_CAP_FROM_BYTES + HEAP_GROWTH_CAP_UNTIL_BYTES) / 2;
  expect(heapGrowthCapped(true, between)).toBe(true);
  expect(heapGrowthCapped(false, between)).toBe(false);
  expect(heapGrowthCapped(true, HEAP_GROWTH_CAP_UNTIL_BYTES - 1)).toBe(false);
});

test("this Node's V8 accepts the flag and its reset to V8's default", () => {
  const flag = heapGrowthFlag([], undefined)!;
  const known = spawnSync(process.execPath, [flag, "-e", "0"], { encoding: "utf8" });
  expect(known.stderr).toBe("");
  expect(known.status).toBe(0);
  // The reset to V8's default (0: its own dynamic factor) is the same flag.
  const reset = spawnSync(process.execPath, ["--heap-growing-percent=0", "-e", "0"], { encoding: "utf8" });
  expect(reset.status).toBe(0);
  // A flag V8 does not know is refused the same way, so the check above can fail.
  const unknown = spawnSync(process.execPath, ["--heap-growing-percentage-typo=30", "-e", "0"], { encoding: "utf8" });
  expect(unknown.status).not.toBe(0);
});
