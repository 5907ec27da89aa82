/**
 * This process's open file descriptors on files under a directory, from /proc/self/fd (an
 * unlinked file still shows its old path, with " (deleted)" after it): for tests of the spill
 * files the in-memory state keeps open.
 */
import { readdirSync, readlinkSync } from "node:fs";

export function openFdsUnder(dir: string): string[] {
  return readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir);
    } catch {
      // Closed between the listing and the read.
      return false;
    }
  });
}
