/**
 * `flower-supernode`'s choice of ClientApp per run, as Flower 1.10's multi-app SuperNode
 * (`_get_load_client_app_fn` with `multi_app=True`): a run without a FAB id gets the default
 * app named on the command line; a run with FAB id `publisher/name` and version V gets the app
 * installed in `<flwr-dir>/apps/publisher/name/V/`, whose `pyproject.toml` names it under
 * `[tool.flwr.app.components] clientapp = "module:attr"`. Any failure is an AppLoadError, which
 * the SuperNode answers with Flower's "could not load ClientApp" error reply.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { ClientApp } from "../client/client-app";
import { AppLoadError, errorMessage } from "../core/errors";
import type { Logger } from "../core/logger";
import { parseTomlScalar } from "./node-config";

/** Folder of installed apps under the Flower directory. Flower 1.10 (`APP_DIR`). */
const APP_DIR = "apps";
/** The FAB's configuration file. Flower 1.10 (`FAB_CONFIG_FILE`). */
const FAB_CONFIG_FILE = "pyproject.toml";

export interface FabAppSourceOptions {
  /** `module:attr` loaded for runs without a FAB id ("" = none: such runs get an error reply). */
  defaultRef: string;
  /** Where the default app is loaded from (`--dir`). */
  projectDir: string;
  /** The Flower directory holding installed apps (`--flwr-dir`, resolved by the CLI). */
  flwrDir: string;
  /** Loads `ref` from `dir`; throws AppLoadError. */
  load: (ref: string, dir: string) => ClientApp;
  logger: Logger;
}

/** `<flwrDir>/apps/<publisher>/<name>/<version>`; AppLoadError for a FAB id without exactly one "/". */
export function fabProjectDir(fabId: string, fabVersion: string, flwrDir: string): string {
  const parts = fabId.split("/");
  if (parts.length !== 2 || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new AppLoadError(`Invalid FAB ID: ${fabId}`);
  }
  if (fabVersion === "" || /[\\/]/.test(fabVersion) || fabVersion === "." || fabVersion === "..") {
    throw new AppLoadError(`Invalid FAB version "${fabVersion}" for FAB ${fabId}`);
  }
  return join(flwrDir, APP_DIR, parts[0]!, parts[1]!, fabVersion);
}

/**
 * The `clientapp` reference of a pyproject.toml: `[tool.flwr.app.components] clientapp = "…"`
 * (or `components.clientapp` under `[tool.flwr.app]`). Reads only those keys, so the rest of
 * the file (arrays, inline tables) needs no full TOML parser.
 */
export function clientAppRefFromPyproject(text: string, where: string): string {
  let table = "";
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    const header = /^\[\s*([^[\]]+?)\s*\]\s*(#.*)?$/.exec(line);
    if (header) {
      table = header[1]!.replace(/\s*\.\s*/g, ".");
      continue;
    }
    const assignment = /^([A-Za-z0-9_.\s-]+?)\s*=\s*(.+)$/.exec(line);
    if (!assignment) continue;
    const key = `${table}.${assignment[1]!.replace(/\s*\.\s*/g, ".")}`;
    if (key !== "tool.flwr.app.components.clientapp") continue;
    const value = parseTomlScalar(assignment[2]!.replace(/\s+#.*$/, ""), `${where} (clientapp)`);
    if (typeof value !== "string" || value === "")
      throw new AppLoadError(`${where}: clientapp must be a non-empty string`);
    return value;
  }
  throw new AppLoadError(`${where} names no ClientApp ([tool.flwr.app.components] clientapp = "module:attr")`);
}

/** The per-run app source handed to the SuperNode as `app`. */
export function createFabAppSource(
  options: FabAppSourceOptions,
): (run: { fabId: string; fabVersion: string }) => ClientApp {
  const { defaultRef, projectDir, flwrDir, load, logger } = options;
  return ({ fabId, fabVersion }) => {
    if (fabId === "") {
      if (defaultRef === "") throw new AppLoadError("Invalid FAB ID: The FAB ID is empty.");
      logger.warn("FAB ID is not provided; the default ClientApp will be loaded.");
      return load(defaultRef, projectDir);
    }
    const dir = fabProjectDir(fabId, fabVersion, flwrDir);
    const configPath = join(dir, FAB_CONFIG_FILE);
    let text: string;
    try {
      text = readFileSync(configPath, "utf8");
    } catch (err) {
      throw new AppLoadError(
        `Failed to load ClientApp: cannot read ${configPath} (is FAB ${fabId} ${fabVersion} installed?): ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
    const ref = clientAppRefFromPyproject(text, configPath);
    logger.debug({ event: "supernode.load-fab-app", fabId, fabVersion, ref }, `Loading ClientApp \`${ref}\``);
    return load(ref, dir);
  };
}
