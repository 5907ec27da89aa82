/**
 * How far V8 lets the SuperLink's JS heap grow past what the last full GC kept. V8 picks a factor
 * of up to 4x from its GC and mutator speeds; a SuperLink holding thousands of long-polled
 * calls promotes each one to the old generation before it ends, so that headroom filled with dead
 * calls: at 10,000 idle nodes ~500 MiB of heap for far less alive. A fixed 1.2x costs a major GC
 * every few seconds there (concurrent marking, a few % of a core) and caps the garbage.
 */
import { setFlagsFromString } from "node:v8";

/** Heap growth after a full GC, in % of the live heap (V8's --heap-growing-percent). */
export const SUPERLINK_HEAP_GROWING_PERCENT = 20;

/**
 * The V8 flag to set, or undefined when the operator chose a heap growth themselves (on the node
 * command line or in NODE_OPTIONS): theirs wins.
 */
export function heapGrowthFlag(execArgv: readonly string[], nodeOptions: string | undefined): string | undefined {
  const given = [...execArgv, nodeOptions ?? ""].join(" ");
  if (/--heap[-_]growing[-_]percent\b/.test(given)) return undefined;
  return `--heap-growing-percent=${SUPERLINK_HEAP_GROWING_PERCENT}`;
}

/** Applies heapGrowthFlag to this process (V8 reads it at every heap limit it computes). */
export function limitHeapGrowth(): void {
  const flag = heapGrowthFlag(process.execArgv, process.env["NODE_OPTIONS"]);
  if (flag !== undefined) setFlagsFromString(flag);
}
