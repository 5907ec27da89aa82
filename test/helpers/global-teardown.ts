/** Removes the shared fixture sets made by global-setup.ts. */
import { rmSync } from "node:fs";
import { FIXTURE_POOL_ENV } from "./fixtures";

export default function globalTeardown(): void {
  const root = process.env[FIXTURE_POOL_ENV];
  if (root !== undefined) rmSync(root, { recursive: true, force: true });
}
