/**
 * How far V8 lets the SuperLink's JS heap grow past what the last full GC kept. V8 picks a factor
 * of up to 4x from its GC and mutator speeds; a SuperLink holding thousands of long-polled
 * calls promotes each one to the old generation before it ends, so that headroom filled with dead
 * calls: at 10,000 idle nodes ~500 MiB of heap for far less alive. A fixed 1.2x caps the garbage
 * but costs a major GC every few seconds: ~15 % more SuperLink CPU in 1,000-node rounds, whose
 * heap stays small (bench/README.md). So the cap is on only while the heap is large: from
 * HEAP_GROWTH_CAP_FROM_BYTES used, off again below HEAP_GROWTH_CAP_UNTIL_BYTES.
 */
import { getHeapStatistics, setFlagsFromString } from "node:v8";

/** Heap growth after a full GC while capped, in % of the live heap (V8's --heap-growing-percent). */
export const SUPERLINK_HEAP_GROWING_PERCENT = 20;
/** JS heap in use from which growth is capped. */
export const HEAP_GROWTH_CAP_FROM_BYTES = 256 * 1024 * 1024;
/** JS heap in use below which V8's own growth factor is back (0 = V8's default, dynamic). */
export const HEAP_GROWTH_CAP_UNTIL_BYTES = 128 * 1024 * 1024;
const CHECK_INTERVAL_MS = 2000;

/**
 * The V8 flag to set while capped, or undefined when the operator chose a heap growth themselves
 * (on the node command line or in NODE_OPTIONS): theirs wins, always.
 */
export function heapGrowthFlag(execArgv: readonly string[], nodeOptions: string | undefined): string | undefined {
  const given = [...execArgv, nodeOptions ?? ""].join(" ");
  if (/--heap[-_]growing[-_]percent\b/.test(given)) return undefined;
  return `--heap-growing-percent=${SUPERLINK_HEAP_GROWING_PERCENT}`;
}

/** Whether growth should be capped now, given whether it is and the JS heap in use. */
export function heapGrowthCapped(capped: boolean, usedHeapBytes: number): boolean {
  return capped ? usedHeapBytes >= HEAP_GROWTH_CAP_UNTIL_BYTES : usedHeapBytes >= HEAP_GROWTH_CAP_FROM_BYTES;
}

/**
 * Caps this process's heap growth while its heap is large (V8 reads the flag at every heap limit
 * it computes); returns a function that stops watching. A no-op when the operator set the flag.
 */
export function limitHeapGrowth(): () => void {
  const flag = heapGrowthFlag(process.execArgv, process.env["NODE_OPTIONS"]);
  if (flag === undefined) return () => undefined;
  let capped = false;
  const timer = setInterval(() => {
    const next = heapGrowthCapped(capped, getHeapStatistics().used_heap_size);
    if (next === capped) return;
    capped = next;
    setFlagsFromString(capped ? flag : "--heap-growing-percent=0");
  }, CHECK_INTERVAL_MS);
  timer.unref();
  return () => clearInterval(timer);
}
