/**
 * Once per jest run, before any test file: builds dist/ if it is missing or older than src/
 * (`npm test` has just built it), and generates the shared certificate and key sets that
 * generateFixtures() copies from (test/helpers/fixtures.ts). global-teardown.ts removes them.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildDist, distIsStale } from "./dist";
import { FIXTURE_POOL_ENV, POOL_CLIENTS, POOL_SETS, generateSet } from "./fixtures";

export default async function globalSetup(): Promise<void> {
  if (distIsStale()) buildDist();
  const root = mkdtempSync(join(tmpdir(), "flwr-ts-fixture-pool-"));
  // Workers start after this and inherit the environment.
  process.env[FIXTURE_POOL_ENV] = root;
  await Promise.all(
    Array.from({ length: POOL_SETS }, (_, i) => generateSet(join(root, `set-${i}`), POOL_CLIENTS, "ec")),
  );
}
