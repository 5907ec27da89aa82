/**
 * Temporary files that exist only as an open descriptor: created in a fresh private directory
 * and unlinked at once, so only this process can reach them, the disk space comes back when the
 * descriptor is closed, and nothing is left behind when the process dies. The ServerApp spills
 * large training results to them (src/server/result-spill.ts), the SuperLink's in-memory state
 * delivered broadcasts (src/state/content-spill.ts).
 */
import { readSync, writeSync } from "node:fs";
import { mkdtemp, open, rm, type FileHandle } from "node:fs/promises";
import { join } from "node:path";

/** A new, empty, already unlinked read-write file, opened in a fresh directory under `dir`. */
export async function openUnlinkedFile(dir: string, prefix: string): Promise<FileHandle> {
  const parent = await mkdtemp(join(dir, prefix));
  try {
    const path = join(parent, "data");
    const handle = await open(path, "wx+", 0o600);
    await rm(path);
    return handle;
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
}

/** Writes all of `bytes` at `position`, blocking (one copy into the page cache). */
export function writeAllSync(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
}

/** Writes all of `bytes` at `position` without blocking the event loop (a libuv thread does). */
export async function writeAll(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}

/**
 * Fills `into` from `position`; returns how many bytes it got, less than `into.length` only when
 * the file ends first.
 */
export function readFullySync(fd: number, into: Uint8Array, position: number): number {
  let done = 0;
  while (done < into.length) {
    const n = readSync(fd, into, done, into.length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}
