/**
 * The browser SuperNode's files as the REST Fleet API serves them (`--rest-serve-browser-client`):
 * the page and its bundle, prebuilt by `npm run build` into dist/browser/ (scripts/build-browser.js)
 * and read once at start, so a request never touches the disk.
 */
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { InvalidConfigError, errorMessage } from "../../core/errors";

export interface StaticFile {
  body: Buffer;
  contentType: string;
}

/** dist/browser/, next to this compiled file's dist/superlink/fleet/. */
export const DEFAULT_BROWSER_CLIENT_DIR = resolve(__dirname, "..", "..", "browser");

/** URL path -> file name in the directory. */
const FILES: ReadonlyArray<[path: string, file: string, contentType: string]> = [
  ["/", "index.html", "text/html; charset=utf-8"],
  ["/index.html", "index.html", "text/html; charset=utf-8"],
  ["/flwr-browser.js", "flwr-browser.js", "text/javascript; charset=utf-8"],
];

/**
 * Headers of every served file: the page runs only its own script and talks only to this
 * origin (or, with a `superlink` query parameter, the SuperLink named there; see docs/browser.md).
 */
export const BROWSER_CLIENT_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self' https:; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-cache",
};

/** Reads the files; throws InvalidConfigError (saying to run `npm run build`) if one is missing. */
export function loadBrowserClientFiles(dir: string = DEFAULT_BROWSER_CLIENT_DIR): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  for (const [path, file, contentType] of FILES) {
    let body: Buffer;
    try {
      body = readFileSync(join(dir, file));
    } catch (err) {
      throw new InvalidConfigError(
        `--rest-serve-browser-client: cannot read ${join(dir, file)} (${errorMessage(err)}); build it with \`npm run build\``,
        { cause: err },
      );
    }
    files.set(path, { body, contentType });
  }
  return files;
}
