/**
 * flwr-ts as a user gets it: `npm pack` the package, check that the tarball is lean, scaffold
 * an app with `flwr-ts new`, `npm install` the tarball into it (from the npm cache when it has
 * everything), type-check the app's TypeScript, and run it through the installed daemons
 * (the app's node_modules/.bin) with TLS and node authentication, from the app's own folder.
 *
 * The install skips install scripts: better-sqlite3 would otherwise compile SQLite from source
 * for minutes when no prebuilt binary can be downloaded, and the in-memory state used here never
 * opens it (docs/your-own-app.md says what a normal install needs).
 */
import { spawn } from "node:child_process";
import { builtinModules } from "node:module";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { Peer } from "../helpers/peer-process";
import { ensureDist } from "../faults/helpers";

jest.setTimeout(240_000);

interface PackedFile {
  path: string;
  size: number;
}
interface PackResult {
  filename: string;
  size: number;
  unpackedSize: number;
  files: PackedFile[];
}

let work: string;
let appDir: string;
let fx: Fixtures;
let packed: PackResult;
const peers: Peer[] = [];

/** The environment for child npm and daemons: no npm_* variables of the npm that runs jest. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("npm_") || k === "npm_config_cache" || k === "npm_config_registry") env[k] = v;
  }
  env["PATH"] = `${dirname(process.execPath)}:${env["PATH"] ?? ""}`;
  return env;
}

/** Runs a command to its end; rejects with its output on a non-zero exit. */
function run(command: string, args: string[], cwd: string, timeoutMs = 180_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: childEnv(), stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${command} ${args.join(" ")} exited ${String(code ?? signal)}:\n${out.slice(-4000)}`));
    });
  });
}

let typecheck: Promise<string>;

/** Names the README's sketch uses without defining them. */
const SNIPPET_PRELUDE = "declare const weights: NDArrays, newWeights: NDArrays, numExamples: number, loss: number;\n";

/**
 * The app-writing examples of README.md and docs/your-own-app.md (the ```ts blocks that import
 * flwr-ts and need no top-level await), as files of the app, so its type check covers them.
 */
function writeDocumentedSnippets(dir: string): void {
  for (const doc of ["README.md", "docs/your-own-app.md"]) {
    const text = readFileSync(join(REPO_ROOT, doc), "utf8");
    let index = 0;
    for (const m of text.matchAll(/```ts\n([\s\S]*?)```/g)) {
      const code = m[1]!;
      if (!code.includes('from "flwr-ts"') || /^(const|let|await)\b.*\bawait\b/m.test(code)) continue;
      const firstLineEnd = code.indexOf("\n") + 1;
      const prelude = /\bNDArrays\b/.test(code.slice(0, firstLineEnd)) ? SNIPPET_PRELUDE : "";
      writeFileSync(
        join(dir, `snippet-${doc.replace(/\W+/g, "-")}-${++index}.ts`),
        code.slice(0, firstLineEnd) + prelude + code.slice(firstLineEnd),
      );
    }
  }
}

beforeAll(async () => {
  ensureDist();
  work = mkdtempSync(join(tmpdir(), "flwr-ts-scaffold-"));
  // Pack without the prepare script: dist/ is current (ensureDist), a second build is slow.
  const pack = run("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", work], REPO_ROOT);
  pack.catch(() => undefined);
  // Certificates and keys while npm packs (generate.sh, as a user would run it).
  fx = generateFixtures(2);
  const packOutput = await pack;
  packed = (JSON.parse(packOutput.slice(packOutput.indexOf("["))) as PackResult[])[0]!;

  await run(process.execPath, [join(REPO_ROOT, "bin", "flwr-ts"), "new", "my-app", "--dir", work], work);
  appDir = join(work, "my-app");
  const install = run(
    "npm",
    ["install", join(work, packed.filename), "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund"],
    appDir,
  );
  await install;
  writeDocumentedSnippets(appDir);
  // Runs while the federation does (the tests below run in order).
  typecheck = run(join(appDir, "node_modules", ".bin", "tsc"), ["--noEmit", "-p", appDir], appDir);
  typecheck.catch(() => undefined);
}, 300_000);

afterAll(async () => {
  await Promise.all(peers.map((p) => p.stop()));
  (fx as Fixtures | undefined)?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("the npm package", () => {
  it("ships the build, the bins, the protos, the templates, generate.sh and the docs, and not tests or sources", () => {
    const paths = packed.files.map((f) => f.path);
    for (const required of [
      "package.json",
      "README.md",
      "dist/index.js",
      "dist/index.d.ts",
      "dist/cli/flwr-ts.js",
      "bin/flower-superlink",
      "bin/flower-client-app",
      "bin/flower-server-app",
      "bin/flower-supernode",
      "bin/flwr-ts",
      "proto/flwr/proto/fleet.proto",
      "templates/app/client.ts.tmpl",
      "templates/app-loader-tsconfig.json",
      "scripts/generate.sh",
      "certificates/certificate.conf",
      "docs/your-own-app.md",
    ]) {
      expect(paths).toContain(required);
    }
    const strays = paths.filter(
      (p) =>
        /^(test|bench|src|node_modules|coverage|\.ci|keys)\//.test(p) || p.endsWith(".map") || p.startsWith("tsconfig"),
    );
    expect(strays).toEqual([]);
    // 3.3 MB at the time of writing, 1.45 MB of it the browser SuperNode's bundle (dist/browser);
    // the whole repository with dist/ packed to 4.2 MB.
    expect(packed.unpackedSize).toBeLessThan(4 * 1024 * 1024);
  });

  it("is publishable and keeps TensorFlow.js out of the install", () => {
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as {
      private?: boolean;
      dependencies: Record<string, string>;
      optionalDependencies?: Record<string, string>;
      peerDependenciesMeta?: Record<string, { optional?: boolean }>;
    };
    expect(pkg.private).toBeUndefined();
    const installed = [...Object.keys(pkg.dependencies), ...Object.keys(pkg.optionalDependencies ?? {})];
    expect(installed.filter((d) => d.startsWith("@tensorflow/"))).toEqual([]);
    expect(pkg.peerDependenciesMeta?.["@tensorflow/tfjs"]?.optional).toBe(true);
    expect(existsSync(join(appDir, "node_modules", "@tensorflow"))).toBe(false);
    expect(existsSync(join(appDir, "node_modules", "tsx"))).toBe(true);
  });

  it("depends on exactly the packages its build requires", () => {
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as {
      dependencies: Record<string, string>;
      peerDependencies?: Record<string, string>;
    };
    const required = new Set<string>();
    for (const file of packed.files.filter((f) => f.path.startsWith("dist/") && f.path.endsWith(".js"))) {
      const text = readFileSync(join(REPO_ROOT, file.path), "utf8");
      for (const m of text.matchAll(/require\("([^"./][^"]*)"\)/g)) {
        const spec = m[1]!;
        if (spec.startsWith("node:") || builtinModules.includes(spec)) continue;
        required.add(spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!);
      }
    }
    const declared = [...Object.keys(pkg.dependencies), ...Object.keys(pkg.peerDependencies ?? {})].sort();
    expect([...required].sort()).toEqual(declared);
  });
});

describe("an app made by flwr-ts new", () => {
  it("runs through the installed daemons with TLS and node authentication and prints its History", async () => {
    const bin = (name: string): string => join(appDir, "node_modules", ".bin", name);
    const start = (name: string, program: string, args: string[]): Peer => {
      const peer = new Peer(name, bin(program), [...args, "--log-format", "json"], childEnv(), appDir);
      peers.push(peer);
      return peer;
    };
    const superlink = start("superlink", "flower-superlink", [
      "--ssl-ca-certfile",
      fx.caCert,
      "--ssl-certfile",
      fx.serverCert,
      "--ssl-keyfile",
      fx.serverKey,
      "--driver-api-address",
      "127.0.0.1:0",
      "--fleet-api-address",
      "127.0.0.1:0",
      "--auth-list-public-keys",
      fx.allowlistCsv,
      "--auth-superlink-private-key",
      fx.superlinkPrivateKey,
      "--auth-superlink-public-key",
      fx.superlinkPublicKey,
    ]);
    const ready = await superlink.waitFor(/^\{.*"event":"superlink\.ready".*$/m, 60_000);
    const readyLine = JSON.parse(ready[0]) as { driverAddress: string; fleetAddress: string };

    for (const i of [0, 1]) {
      start(`supernode-${i + 1}`, "flower-client-app", [
        "client:app",
        "--superlink",
        readyLine.fleetAddress,
        "--root-certificates",
        fx.caCert,
        "--auth-supernode-private-key",
        fx.clientPrivateKeys[i]!,
        "--auth-supernode-public-key",
        fx.clientPublicKeys[i]!,
        "--node-config",
        `partition-id=${i},num-partitions=2`,
      ]);
    }
    const historyPath = join(appDir, "history.json");
    const serverApp = start("serverapp", "flower-server-app", [
      "server:app",
      "--superlink",
      readyLine.driverAddress,
      "--root-certificates",
      fx.caCert,
      "--history-json",
      historyPath,
    ]);
    const code = await serverApp.waitForExit(120_000);
    expect({ code, output: code === 0 ? "" : serverApp.tail() }).toEqual({ code: 0, output: "" });
    expect(serverApp.output).toContain("History (loss, distributed):");

    const history = JSON.parse(readFileSync(historyPath, "utf8")) as {
      lossesDistributed: Array<[number, number]>;
      metricsDistributed: Record<string, Array<[number, number]>>;
    };
    const losses = history.lossesDistributed.map(([, loss]) => loss);
    expect(history.lossesDistributed.map(([round]) => round)).toEqual([1, 2, 3]);
    // Gradient descent on a linear model: the federated loss falls every round.
    expect(losses[1]!).toBeLessThan(losses[0]!);
    expect(losses[2]!).toBeLessThan(losses[1]!);
    const mse = history.metricsDistributed["mse"];
    expect(mse?.map(([round]) => round)).toEqual([1, 2, 3]);
    // Both nodes registered with their keys.
    expect(superlink.output.match(/registered \(authenticated\)/g)?.length).toBe(2);
  });

  it("type-checks (strict, noUncheckedIndexedAccess, exactOptionalPropertyTypes), with the examples of the README and the guide", async () => {
    expect(readdirSync(appDir).filter((f) => f.startsWith("snippet-")).length).toBeGreaterThanOrEqual(3);
    await expect(typecheck).resolves.toBeDefined();
  });

  it("has the flwr-ts bin installed too", async () => {
    const version = await run(join(appDir, "node_modules", ".bin", "flwr-ts"), ["--version"], appDir);
    expect(version.trim()).toBe(
      (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string }).version,
    );
  });
});
