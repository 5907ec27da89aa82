import { ReleasedBytes, collectGarbage } from "../../src/core/garbage-collection";

const MiB = 1024 * 1024;
const BUFFER_BYTES = 128 * MiB;

interface ResizableArrayBufferConstructor {
  new (byteLength: number, options: { maxByteLength: number }): ArrayBuffer;
}

/**
 * Fills a resizable ArrayBuffer (what the incremental gRPC decoder receives messages into, memory
 * V8 does not count) and drops it; returns the RSS while it was alive.
 */
function dropFilledResizableBuffer(): number {
  const buffer = new (ArrayBuffer as unknown as ResizableArrayBufferConstructor)(BUFFER_BYTES, {
    maxByteLength: BUFFER_BYTES,
  });
  new Uint8Array(buffer).fill(7);
  return process.memoryUsage().rss;
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe("collectGarbage and ReleasedBytes (memory V8 does not see, given back)", () => {
  test("collectGarbage frees a dropped resizable buffer before it returns", () => {
    for (let attempt = 0; attempt < 2; attempt++) {
      const alive = dropFilledResizableBuffer();
      expect(collectGarbage()).toBe(true);
      // One collection alone often leaves the freeing to a background task (RSS unchanged here).
      expect(alive - process.memoryUsage().rss).toBeGreaterThan(BUFFER_BYTES / 2);
    }
  });

  test("ReleasedBytes collects a turn after minBytes were released, or at once with collectNow", async () => {
    const released = new ReleasedBytes(64 * MiB);
    let alive = dropFilledResizableBuffer();
    released.add(BUFFER_BYTES);
    await turn();
    expect(alive - process.memoryUsage().rss).toBeGreaterThan(BUFFER_BYTES / 2);

    alive = dropFilledResizableBuffer();
    released.add(MiB); // below minBytes: nothing scheduled
    released.collectNow();
    expect(alive - process.memoryUsage().rss).toBeGreaterThan(BUFFER_BYTES / 2);
  });
});
