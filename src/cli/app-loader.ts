/**
 * Loads an app object from a "module:attribute" reference, the way Flower's
 * `flower-client-app client:app --dir DIR` does: the module is looked up under DIR.
 * JavaScript modules load directly; TypeScript modules load through ts-node (transpile only)
 * when it is installed. The app is loaded once, at startup, so a broken app fails fast.
 */
import { existsSync, statSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { AppLoadError, errorMessage } from "../core/errors";

const MODULE_EXTENSIONS = [".js", ".cjs", ".ts", ".cts"];

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

let tsNodeRegistered = false;

function ensureTypeScriptLoader(file: string): void {
  if (tsNodeRegistered || !/\.c?ts$/.test(file)) return;
  let tsNode: { register(opts: object): unknown };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    tsNode = require("ts-node") as typeof tsNode;
  } catch (err) {
    throw new AppLoadError(
      `"${file}" is TypeScript but ts-node is not installed; compile it to JavaScript or install ts-node`,
      { cause: err },
    );
  }
  tsNode.register({ transpileOnly: true, compilerOptions: { module: "commonjs" } });
  tsNodeRegistered = true;
}

/** Loads `ref` ("module:attribute") from `dir` and returns the attribute's value. */
export function loadAppObject(ref: string, dir: string): unknown {
  const { module, attribute } = parseAppReference(ref);
  const file = resolveAppModule(module, dir);
  ensureTypeScriptLoader(file);
  let exports: Record<string, unknown>;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    exports = require(file) as Record<string, unknown>;
  } catch (err) {
    throw new AppLoadError(`Loading "${file}" failed: ${errorMessage(err)}`, { cause: err });
  }
  if (!(attribute in exports) || exports[attribute] === undefined) {
    throw new AppLoadError(`Module "${file}" has no export "${attribute}" (from "${ref}")`);
  }
  return exports[attribute];
}
