/**
 * Loads an app object from a "module:attribute" reference, the way Flower's
 * `flower-client-app client:app --dir DIR` does: the module is looked up under DIR.
 *
 * Every app module (.js/.cjs/.mjs/.ts/.cts/.mts) is loaded synchronously through tsx's
 * CommonJS hook (a dependency of this package, so an installed flwr-ts needs nothing else):
 * TypeScript is stripped by esbuild without type checking, and ES-module syntax is turned into
 * CommonJS, so an app may mix both and import its own .ts helpers.
 *
 * tsx reads TSX_TSCONFIG_PATH, else the tsconfig.json found from the working directory up, so
 * starting a daemon from a TypeScript project's root (this repository's, say) would apply that
 * project's settings to the app. Unless the user sets TSX_TSCONFIG_PATH, it is pointed at an
 * empty one shipped with the package: an app loads the same from any folder.
 * The app is loaded once, at startup, so a broken app fails fast, with file:line in the error.
 */
import { existsSync, statSync } from "node:fs";
import { isAbsolute, join, resolve, sep } from "node:path";
import { AppLoadError, errorMessage } from "../core/errors";

const MODULE_EXTENSIONS = [".js", ".cjs", ".mjs", ".ts", ".cts", ".mts"];

/** templates/app-loader-tsconfig.json (src/cli/ and dist/cli/ both sit two levels below it). */
export const APP_LOADER_TSCONFIG = join(__dirname, "..", "..", "templates", "app-loader-tsconfig.json");

export interface AppReference {
  module: string;
  attribute: string;
}

export function parseAppReference(ref: string): AppReference {
  const m = /^([A-Za-z0-9_.\-/]+):([A-Za-z_$][A-Za-z0-9_$]*)$/.exec(ref);
  if (!m) {
    throw new AppLoadError(`Invalid app reference "${ref}": expected MODULE:ATTRIBUTE, e.g. "client:app"`);
  }
  return { module: m[1]!, attribute: m[2]! };
}

/** The file a module name resolves to under `dir` ("a.b" -> a/b.js, a/b.ts, a/b/index.js...). */
export function resolveAppModule(moduleName: string, dir: string): string {
  const base = resolve(dir, moduleName.includes("/") ? moduleName : moduleName.split(".").join("/"));
  const candidates = [
    ...(isAbsolute(moduleName) ? [moduleName] : []),
    ...MODULE_EXTENSIONS.map((ext) => base + ext),
    ...MODULE_EXTENSIONS.map((ext) => join(base, "index" + ext)),
  ];
  for (const c of candidates) {
    if (existsSync(c) && statSync(c).isFile()) return c;
  }
  throw new AppLoadError(
    `Cannot find module "${moduleName}" in "${resolve(dir)}" (looked for ${MODULE_EXTENSIONS.map((e) => moduleName + e).join(", ")})`,
  );
}

const NO_TOP_LEVEL_AWAIT = "app modules are loaded synchronously: no top-level await; move it into a function";

let typeScriptLoaderRegistered = false;

/** Installs tsx's require hook once per process (it stays for modules the app loads later). */
function registerTypeScriptLoader(): void {
  if (typeScriptLoaderRegistered) return;
  process.env["TSX_TSCONFIG_PATH"] ??= APP_LOADER_TSCONFIG;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const tsx = require("tsx/cjs/api") as { register(): unknown };
    tsx.register();
  } catch (err) {
    throw new AppLoadError(`Cannot set up the TypeScript loader (tsx): ${errorMessage(err)}`, { cause: err });
  }
  typeScriptLoaderRegistered = true;
}

/** Loads `ref` ("module:attribute") from `dir` and returns the attribute's value. */
export function loadAppObject(ref: string, dir: string): unknown {
  const { module, attribute } = parseAppReference(ref);
  const file = resolveAppModule(module, dir);
  registerTypeScriptLoader();
  let exports: Record<string, unknown>;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    exports = require(file) as Record<string, unknown>;
  } catch (err) {
    throw new AppLoadError(`Loading "${file}" failed: ${describeLoadError(err, file, dir)}`, { cause: err });
  }
  if (!(attribute in exports) || exports[attribute] === undefined) {
    const names = Object.keys(exports).filter((k) => k !== "__esModule");
    throw new AppLoadError(
      `Module "${file}" has no export "${attribute}" (from "${ref}"); it exports ${names.length > 0 ? names.map((n) => `"${n}"`).join(", ") : "nothing"}`,
    );
  }
  return exports[attribute];
}

/**
 * One line saying what went wrong and where (file:line[:column]): esbuild's transform errors
 * carry the location in their text, V8's SyntaxErrors in the first stack line, and errors
 * thrown while the module runs in their first stack frame in `appDir` (else the first outside
 * node_modules and Node itself).
 */
export function describeLoadError(err: unknown, file: string, appDir: string): string {
  if (!(err instanceof Error)) return errorMessage(err);
  const code = (err as { code?: unknown }).code;
  const transform = /^Transform failed with \d+ errors?:\n([\s\S]*)$/.exec(err.message);
  if (transform) {
    const detail = transform[1]!
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => l.replace(/: ERROR: /, ": "));
    // tsx names a .mts/.cts file by its .ts twin in these messages; name the real file.
    const twin = file.replace(/\.[cm]ts$/, ".ts");
    const first = (detail[0] ?? err.message)
      .replace(twin !== file && !existsSync(twin) ? `${twin}:` : "\0", `${file}:`)
      // esbuild counts columns from 0, editors and V8 from 1.
      .replace(/^(.+?:\d+):(\d+): /, (_m, at: string, column: string) => `${at}:${Number(column) + 1}: `);
    return /Top-level await/i.test(first) ? `${first} (${NO_TOP_LEVEL_AWAIT})` : first;
  }
  if (code === "ERR_REQUIRE_ASYNC_MODULE") {
    return `${err.message.split("\n")[0]!} (${NO_TOP_LEVEL_AWAIT})`;
  }
  if (code === "MODULE_NOT_FOUND") {
    const stack = (err as { requireStack?: unknown }).requireStack;
    const importer = Array.isArray(stack) && typeof stack[0] === "string" ? stack[0] : undefined;
    const missing = err.message.split("\n")[0]!;
    const hint = /'flwr-ts'/.test(missing) ? " (run `npm install flwr-ts` in the app's folder)" : "";
    return importer !== undefined ? `${missing}, imported by ${importer}${hint}` : `${missing}${hint}`;
  }
  const stackText = err.stack ?? "";
  if (err instanceof SyntaxError) {
    const where = /^(\S.*:\d+)\n/.exec(stackText);
    if (where) return `${where[1]!}: SyntaxError: ${err.message}`;
  }
  const frame = firstUserFrame(stackText, resolve(appDir));
  const summary = `${err.name}: ${err.message.split("\n")[0]!}`;
  return frame !== undefined ? `${frame}: ${summary}` : summary;
}

/** `file:line:column` of the first stack frame under `appDir`, else outside node_modules and Node. */
function firstUserFrame(stack: string, appDir: string): string | undefined {
  const locations: string[] = [];
  for (const line of stack.split("\n")) {
    const m = /^\s+at (?:.*? \()?((?:file:\/\/)?[^()\s]+:\d+:\d+)\)?$/.exec(line);
    const location = m?.[1];
    if (location === undefined || location.startsWith("node:") || location.includes(`${sep}node_modules${sep}`))
      continue;
    locations.push(location);
  }
  const inApp = locations.find((l) => l.replace(/^file:\/\//, "").startsWith(appDir + sep));
  return inApp ?? locations[0];
}
