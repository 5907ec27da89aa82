/**
 * App modules load the same from any folder, through tsx (a dependency), in child processes:
 * jest's own module system would otherwise stand in for Node's require. Every extension, mixed
 * ESM/TypeScript imports, the repository root as the working directory (whose tsconfig.json is
 * node16, which once made ts-node fail every .ts app with TS5110), a foreign tsconfig.json in
 * the working directory (ignored unless TSX_TSCONFIG_PATH names it), and load errors that say
 * file:line.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT } from "../helpers/fixtures";

const APP_LOADER = join(REPO_ROOT, "dist", "cli", "app-loader.js");

let dir: string;

function write(path: string, text: string): void {
  mkdirSync(join(path, ".."), { recursive: true });
  writeFileSync(path, text);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "flwr-ts-app-loader-"));
  const apps = join(dir, "apps");
  write(join(apps, "js-app.js"), `exports.app = "js";\n`);
  write(join(apps, "cjs-app.cjs"), `module.exports = { app: "cjs" };\n`);
  write(join(apps, "mjs-app.mjs"), `import { sep } from "node:path";\nexport const app = "mjs" + (sep ? "" : "?");\n`);
  write(join(apps, "shared.ts"), `export const suffix: string = "!";\n`);
  write(
    join(apps, "ts-app.ts"),
    `import { suffix } from "./shared";\ninterface Named { name: string }\nconst named: Named = { name: "ts" + suffix };\nexport const app = named.name;\n`,
  );
  write(join(apps, "cts-app.cts"), `const value: string = "cts";\nexport const app = value;\n`);
  write(
    join(apps, "mts-app.mts"),
    `import { suffix } from "./shared.ts";\nexport const app: string = "mts" + suffix;\n`,
  );
  write(join(apps, "pkg", "package.json"), `{ "type": "module" }\n`);
  write(join(apps, "pkg", "esm-app.js"), `import { helper } from "./helper.ts";\nexport const app = helper();\n`);
  write(join(apps, "pkg", "helper.ts"), `export function helper(): string { return "esm-js"; }\n`);
  write(join(apps, "nested", "index.ts"), `export const app: string = "index";\n`);
  // The same bare import resolves to node_modules, unless a tsconfig's paths remap it.
  write(join(apps, "uses-alias.ts"), `import { where } from "alias-target";\nexport const app: string = where;\n`);
  write(join(apps, "node_modules", "alias-target", "index.js"), `exports.where = "node_modules";\n`);
  write(join(dir, "cwd", "remapped.ts"), `export const where: string = "cwd tsconfig";\n`);
  write(
    join(dir, "cwd", "tsconfig.json"),
    JSON.stringify({ compilerOptions: { baseUrl: ".", paths: { "alias-target": ["./remapped.ts"] } } }),
  );

  write(join(apps, "bad-ts.ts"), `const ok: number = 1;\nexport const app = ok +;\n`);
  write(join(apps, "bad-mts.mts"), `export const a = 1;\nexport const app = {;\n`);
  write(join(apps, "bad-js.js"), `const ok = 1;\nconst app = ;\n`);
  write(
    join(apps, "throws.ts"),
    `const ok: number = 1;\nif (ok) throw new Error("no data folder");\nexport const app = ok;\n`,
  );
  write(join(apps, "no-app.ts"), `export const client = 1;\nexport const other = 2;\n`);
  write(join(apps, "missing-import.ts"), `import { ClientApp } from "flwr-ts";\nexport const app = ClientApp;\n`);
  write(join(apps, "tla.mts"), `export const app = await Promise.resolve(1);\n`);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Outcome {
  value?: unknown;
  error?: string;
}

/** Loads each ref from `dir/apps` in one child process started in `cwd`. */
function loadInChild(refs: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Record<string, Outcome> {
  const script = `
    const { loadAppObject } = require(${JSON.stringify(APP_LOADER)});
    const out = {};
    for (const ref of process.argv.slice(1)) {
      try { out[ref] = { value: loadAppObject(ref, ${JSON.stringify(join(dir, "apps"))}) }; }
      catch (e) { out[ref] = { error: e.code + " " + e.message }; }
    }
    process.stdout.write(JSON.stringify(out));`;
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  if (!("TSX_TSCONFIG_PATH" in env)) delete childEnv["TSX_TSCONFIG_PATH"];
  const result = spawnSync(process.execPath, ["-e", script, ...refs], {
    cwd,
    env: childEnv,
    encoding: "utf8",
    timeout: 30_000,
  });
  if (result.status !== 0) throw new Error(`loader child failed (${String(result.status)}): ${result.stderr}`);
  return JSON.parse(result.stdout) as Record<string, Outcome>;
}

const GOOD: Record<string, string> = {
  "js-app:app": "js",
  "cjs-app:app": "cjs",
  "mjs-app:app": "mjs",
  "ts-app:app": "ts!",
  "cts-app:app": "cts",
  "mts-app:app": "mts!",
  "pkg/esm-app:app": "esm-js",
  "nested:app": "index",
};

describe("app modules of every extension", () => {
  it.each([
    ["the repository root (a node16 tsconfig.json)", () => REPO_ROOT],
    ["an unrelated folder", () => tmpdir()],
  ])("load with %s as the working directory", (_label, cwd) => {
    const outcomes = loadInChild(Object.keys(GOOD), cwd());
    for (const [ref, expected] of Object.entries(GOOD)) {
      expect({ ref, ...outcomes[ref] }).toEqual({ ref, value: expected });
    }
  });

  it("ignore the working directory's tsconfig.json unless TSX_TSCONFIG_PATH names one", () => {
    const cwd = join(dir, "cwd");
    expect(loadInChild(["uses-alias:app"], cwd)["uses-alias:app"]).toEqual({ value: "node_modules" });
    const chosen = loadInChild(["uses-alias:app"], cwd, { TSX_TSCONFIG_PATH: join(cwd, "tsconfig.json") });
    expect(chosen["uses-alias:app"]).toEqual({ value: "cwd tsconfig" });
  });
});

describe("load errors", () => {
  let outcomes: Record<string, Outcome>;
  beforeAll(() => {
    outcomes = loadInChild(
      [
        "bad-ts:app",
        "bad-mts:app",
        "bad-js:app",
        "throws:app",
        "no-app:app",
        "missing-import:app",
        "tla:app",
        "absent:app",
      ],
      REPO_ROOT,
    );
  });
  const apps = (): string => join(dir, "apps");

  it("name file:line:column of a TypeScript syntax error", () => {
    expect(outcomes["bad-ts:app"]!.error).toContain(
      `FLWR_APP_LOAD_FAILED Loading "${apps()}/bad-ts.ts" failed: ${apps()}/bad-ts.ts:2:24: `,
    );
    expect(outcomes["bad-mts:app"]!.error).toContain(`failed: ${apps()}/bad-mts.mts:2:`);
  });

  it("name file:line of a JavaScript syntax error", () => {
    expect(outcomes["bad-js:app"]!.error).toContain(`failed: ${apps()}/bad-js.js:2: SyntaxError: Unexpected token`);
  });

  it("name the app's line that threw while the module ran", () => {
    expect(outcomes["throws:app"]!.error).toMatch(
      new RegExp(`failed: ${apps()}/throws\\.ts:2:\\d+: Error: no data folder$`),
    );
  });

  it("list what a module exports when the attribute is missing", () => {
    expect(outcomes["no-app:app"]!.error).toBe(
      `FLWR_APP_LOAD_FAILED Module "${apps()}/no-app.ts" has no export "app" (from "no-app:app"); it exports "client", "other"`,
    );
  });

  it("say which module an app imports that is not installed", () => {
    expect(outcomes["missing-import:app"]!.error).toContain(
      `Cannot find module 'flwr-ts', imported by ${apps()}/missing-import.ts (run \`npm install flwr-ts\` in the app's folder)`,
    );
  });

  it("explain that top-level await cannot be used", () => {
    expect(outcomes["tla:app"]!.error).toContain(`${apps()}/tla.mts:1:`);
    expect(outcomes["tla:app"]!.error).toContain("no top-level await");
  });

  it("list the extensions looked for when no module matches", () => {
    expect(outcomes["absent:app"]!.error).toContain(
      "absent.js, absent.cjs, absent.mjs, absent.ts, absent.cts, absent.mts",
    );
  });

  it("make flower-server-app exit 2 with file:line on stderr", () => {
    const result = spawnSync(
      join(REPO_ROOT, "bin", "flower-server-app"),
      ["bad-ts:app", "--dir", apps(), "--insecure", "--log-format", "text"],
      {
        cwd: REPO_ROOT,
        encoding: "utf8",
        timeout: 30_000,
      },
    );
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(`${apps()}/bad-ts.ts:2:24`);
  });
});
