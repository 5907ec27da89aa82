/**
 * Launching Debian's Chromium headless for browser tests, through puppeteer-core (no browser is
 * ever downloaded). `chromiumPath()` says where it is, or undefined (tests then skip, saying so).
 * The test CA is trusted by pinning the SuperLink certificate's public key
 * (`--ignore-certificate-errors-spki-list`): only certificates carrying that key are accepted
 * despite the unknown CA; every other certificate error still fails.
 */
import { createHash, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type * as PuppeteerModule from "puppeteer-core";
import type { Browser } from "puppeteer-core";

export const DEFAULT_CHROMIUM = "/usr/bin/chromium";

/** FLWR_CHROMIUM, else /usr/bin/chromium; undefined when neither exists. */
export function chromiumPath(): string | undefined {
  const candidate = process.env["FLWR_CHROMIUM"] ?? DEFAULT_CHROMIUM;
  return existsSync(candidate) ? candidate : undefined;
}

/** base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: Chromium's SPKI pin format. */
export function spkiHash(certPemPath: string): string {
  const spki = new X509Certificate(readFileSync(certPemPath)).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

export interface LaunchedChromium {
  browser: Browser;
  /** Closes the browser and removes its profile directory. */
  close(): Promise<void>;
}

/** Starts headless Chromium with a fresh profile, trusting certificates with `trustSpki` keys. */
export async function launchChromium(options: { trustCertPem?: string } = {}): Promise<LaunchedChromium> {
  const executablePath = chromiumPath();
  if (executablePath === undefined)
    throw new Error(`Chromium not found (set FLWR_CHROMIUM or install ${DEFAULT_CHROMIUM})`);
  // Loaded on use: a machine without Chromium never needs it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const puppeteer = require("puppeteer-core") as typeof PuppeteerModule;
  const profile = mkdtempSync(join(tmpdir(), "flwr-chromium-"));
  const args = [
    `--user-data-dir=${profile}`,
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--enable-unsafe-swiftshader",
  ];
  // Chromium's sandbox cannot start as root (CI containers).
  if (process.getuid?.() === 0) args.push("--no-sandbox");
  if (options.trustCertPem !== undefined)
    args.push(`--ignore-certificate-errors-spki-list=${spkiHash(options.trustCertPem)}`);
  const browser = await puppeteer.launch({ executablePath, headless: true, args, protocolTimeout: 120_000 });
  return {
    browser,
    async close() {
      await browser.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
