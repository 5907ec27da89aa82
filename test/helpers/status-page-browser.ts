/**
 * A real headless Chromium for the SuperLink status-page test (puppeteer-core, no downloaded
 * browser): /usr/bin/chromium, or the binary named by FLWR_CHROMIUM. When it is absent the test
 * skips and says why (CI installs it: .ci/run).
 */
import { existsSync } from "node:fs";
import * as puppeteer from "puppeteer-core";

export const CHROMIUM_PATH = process.env["FLWR_CHROMIUM"] ?? "/usr/bin/chromium";

/** Why the browser tests cannot run here, or undefined when they can. */
export function chromiumSkipReason(): string | undefined {
  return existsSync(CHROMIUM_PATH)
    ? undefined
    : `skipped: no Chromium at ${CHROMIUM_PATH} (apt-get install chromium, or set FLWR_CHROMIUM to a Chromium binary)`;
}

/** Headless, no sandbox (tests run as root in CI), its own temporary profile; close() ends it. */
export function launchChromium(): Promise<puppeteer.Browser> {
  return puppeteer.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check"],
  });
}
