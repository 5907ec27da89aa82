/**
 * The browser form of src/example/cifar10.ts (swapped in by scripts/build-browser.js): a page
 * cannot read CIFAR-10's files from disk, so the example uses its synthetic data there.
 */
import { InvalidConfigError } from "../core/errors";

export const CIFAR10_RECORD_BYTES = 3073;

function unavailable(): never {
  throw new InvalidConfigError("CIFAR-10 files cannot be read in a browser: the page trains on the synthetic data");
}

export function cifar10RecordCount(): number {
  return unavailable();
}

export function loadCifar10Binary(): never {
  return unavailable();
}
