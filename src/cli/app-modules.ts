/**
 * The CLI's side of loading app modules: which tsconfig.json tsx uses for them. tsx reads
 * TSX_TSCONFIG_PATH, else the tsconfig.json found from the working directory up, so starting a
 * daemon from a TypeScript project's root (this repository's, say) would apply that project's
 * settings to the app. Unless the user sets TSX_TSCONFIG_PATH, point it at an empty one shipped
 * with the package: an app loads the same from any folder.
 */
import { join } from "node:path";
import { loadAppObject } from "../core/app-loader";

/** templates/app-loader-tsconfig.json (src/cli/ and dist/cli/ both sit two levels below it). */
export const APP_LOADER_TSCONFIG = join(__dirname, "..", "..", "templates", "app-loader-tsconfig.json");

/** loadAppObject with the tsconfig choice above; throws AppLoadError. */
export function loadAppModuleObject(ref: string, dir: string): unknown {
  process.env["TSX_TSCONFIG_PATH"] ??= APP_LOADER_TSCONFIG;
  return loadAppObject(ref, dir);
}
