/**
 * A major garbage collection on demand, for a process that just dropped large buffers V8 does
 * not count. Received gRPC messages live in resizable ArrayBuffers (src/transport/grpc-zero-copy.ts,
 * the incremental decoder) that put no pressure on the collector: with a JavaScript heap of a
 * few MB, a 100 MB message that became garbage can stay in the RSS for a whole round. A
 * collection of such a small heap takes a few milliseconds.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

type Collect = (options?: { type: "minor" | "major" }) => void;
let collect: Collect | null | undefined;

/** V8's `gc`, exposed on first use (null when this V8 refuses). */
function garbageCollector(): Collect | null {
  if (collect === undefined) {
    try {
      setFlagsFromString("--expose-gc");
      collect = runInNewContext("gc") as Collect;
    } catch {
      collect = null;
    }
  }
  return collect;
}

/**
 * One major collection now, where this V8 allows one: the cheap form for callers that ask
 * often (the memory of dead array buffers may come back a little later; see collectGarbage).
 */
export function collectGarbageOnce(): void {
  garbageCollector()?.();
}

/**
 * One young-generation collection now (a fraction of a millisecond), where this V8 allows one.
 * It frees the memory of array buffers that died young, such as the 16 KiB chunks Node hands a
 * received HTTP/2 stream: V8 sees only their small JS objects, so without one they pile up as
 * tens of MiB of dead memory before a collection comes.
 */
export function collectYoungGarbage(): void {
  garbageCollector()?.({ type: "minor" });
}

/**
 * Runs a major collection now and frees the memory of the array buffers it found dead; false
 * where this V8 offers no collection. One collection leaves that freeing to a background task,
 * which on a busy machine ran hundreds of milliseconds later (a 100 MB message still in the RSS
 * while the next allocation came); a second collection first finishes that task, so the memory
 * is back when this returns.
 */
export function collectGarbage(): boolean {
  const gc = garbageCollector();
  if (gc === null) return false;
  gc();
  gc();
  return true;
}

/**
 * Counts bytes released and collects garbage once `minBytes` were released since the last
 * collection, in a later turn of the event loop (after whoever dropped the bytes returned), or
 * at once with `collectNow`.
 */
export class ReleasedBytes {
  private released = 0;
  private scheduled = false;

  constructor(private readonly minBytes: number) {}

  add(bytes: number): void {
    this.released += bytes;
    if (this.released < this.minBytes || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.collectNow();
    });
  }

  /** Collects now if anything was released since the last collection. */
  collectNow(): void {
    if (this.released === 0) return;
    this.released = 0;
    collectGarbage();
  }
}
