/**
 * `flwr-ts new NAME`: a runnable app folder from templates/app/ (Flower's `flwr new`). Each
 * `FILE.tmpl` becomes `FILE` with `{{name}}` and `{{flwrVersion}}` filled in; `gitignore.tmpl`
 * becomes `.gitignore` (npm never packs a file of that name). The templates end in .tmpl so
 * that no tool of this repository (tsc, jest, eslint) mistakes them for its own sources.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { InvalidConfigError } from "../core/errors";

/** templates/app (src/cli/ and dist/cli/ both sit two levels below the package root). */
export const APP_TEMPLATE_DIR = join(__dirname, "..", "..", "templates", "app");

/** npm's rules for a new package name, which the folder name also becomes. */
const PACKAGE_NAME = /^[a-z0-9][a-z0-9._-]{0,213}$/;

export interface NewAppOptions {
  name: string;
  /** The folder that gets the new app folder `name`. */
  parentDir: string;
  /** Written as the `flwr-ts` dependency: `^version`. */
  flwrVersion: string;
  templateDir?: string;
}

/** Creates `parentDir/name` from the template; returns the folder and the files written. */
export function createApp(options: NewAppOptions): { dir: string; files: string[] } {
  const { name, flwrVersion } = options;
  if (!PACKAGE_NAME.test(name) || name === "node_modules" || name === "favicon.ico") {
    throw new InvalidConfigError(
      `Invalid app name "${name}": use lowercase letters, digits, "-", "." and "_" (it becomes the folder and the package name)`,
    );
  }
  const dir = resolve(options.parentDir, name);
  if (existsSync(dir) && readdirSync(dir).length > 0) {
    throw new InvalidConfigError(`"${dir}" already exists and is not empty: choose another name or remove it`);
  }
  const templateDir = options.templateDir ?? APP_TEMPLATE_DIR;
  const templates = readdirSync(templateDir)
    .filter((f) => f.endsWith(".tmpl"))
    .sort();
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (const template of templates) {
    const target = template === "gitignore.tmpl" ? ".gitignore" : template.slice(0, -".tmpl".length);
    const text = readFileSync(join(templateDir, template), "utf8").replace(
      /\{\{(name|flwrVersion)\}\}/g,
      (_m, key: string) => (key === "name" ? name : flwrVersion),
    );
    writeFileSync(join(dir, target), text);
    files.push(target);
  }
  return { dir, files };
}
