/**
 * The browser bundle (scripts/build-browser.js -> dist/browser/) holds the same SuperNode,
 * ClientApp, records and auth source as the Node programs and nothing Node-only: no
 * `require("node:…")`, no grpc-js, no Node build of pino; and a Node-only import fails the build,
 * naming the importer. Needs no browser.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT } from "../helpers/fixtures";
import * as browserCifar10 from "../../src/browser/cifar10-unavailable";
import * as browserTensorFlow from "../../src/browser/tensorflow-browser";
import * as nodeCifar10 from "../../src/example/cifar10";
import * as nodeTensorFlow from "../../src/example/tensorflow";

jest.setTimeout(120_000);

const BUILD = join(REPO_ROOT, "scripts", "build-browser.js");
let work: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "flwr-ts-bundle-"));
  execFileSync(process.execPath, [BUILD, "--entry", join(REPO_ROOT, "src", "browser", "main.ts"), "--outdir", work], {
    cwd: REPO_ROOT,
    stdio: "pipe",
  });
});
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

test("the bundle is the shared source with nothing Node-only", () => {
  const bundle = readFileSync(join(work, "flwr-browser.js"), "utf8");
  expect(bundle).not.toMatch(/require\(\s*["']node:/);
  expect(bundle).not.toMatch(
    /require\(\s*["'](fs|path|http|https|http2|net|tls|crypto|os|child_process|zlib|worker_threads)["']\s*\)/,
  );
  const inputs = Object.keys(
    (JSON.parse(readFileSync(join(work, "meta.json"), "utf8")) as { inputs: Record<string, unknown> }).inputs,
  );
  for (const shared of [
    "src/supernode/supernode-core.ts",
    "src/supernode/rest-connection.ts",
    "src/client/client-app.ts",
    "src/client/numpy-client.ts",
    "src/core/records/serde.ts",
    "src/core/wire/canonical.ts",
    "src/auth/web-auth.ts",
    "src/example/model.ts",
    "src/example/synthetic-data.ts",
  ]) {
    expect(inputs).toContain(shared);
  }
  expect(
    inputs.filter((i) => /node_modules\/(@grpc|better-sqlite3|commander|@tensorflow\/tfjs-node)\//.test(i)),
  ).toEqual([]);
  expect(inputs.filter((i) => /node_modules\/pino\//.test(i))).toEqual(["node_modules/pino/browser.js"]);
  for (const nodeOnly of [
    "src/auth/keys.ts",
    "src/auth/crypto.ts",
    "src/supernode/node-rest-poster.ts",
    "src/supernode/fleet-connection.ts",
    "src/example/cifar10.ts",
  ]) {
    expect(inputs).not.toContain(nodeOnly);
  }
});

test("a Node-only import fails the build and names the importer", () => {
  const entry = join(work, "bad-entry.ts");
  writeFileSync(
    entry,
    `import { createNodeRestPoster } from ${JSON.stringify(join(REPO_ROOT, "src", "supernode", "node-rest-poster"))};\nconsole.log(createNodeRestPoster);\n`,
  );
  const r = spawnSync(process.execPath, [BUILD, "--entry", entry, "--outdir", join(work, "bad")], {
    cwd: REPO_ROOT,
    encoding: "utf8",
  });
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/Node-only module "node:http" imported by src\/supernode\/node-rest-poster\.ts/);
});

test("each browser replacement module exports what the Node module it replaces exports", () => {
  // esbuild cannot tell a missing export of a TypeScript module from a type, so a function the
  // Node module gained and its browser form lacks would be undefined only when a page calls it.
  const pairs: Array<[string, object, object]> = [
    ["tensorflow-browser", nodeTensorFlow, browserTensorFlow],
    ["cifar10-unavailable", nodeCifar10, browserCifar10],
  ];
  for (const [browserModule, nodeModule, browserForm] of pairs) {
    const nodeExports = Object.keys(nodeModule).sort();
    const browserExports = Object.keys(browserForm);
    expect({ module: browserModule, missing: nodeExports.filter((name) => !browserExports.includes(name)) }).toEqual({
      module: browserModule,
      missing: [],
    });
  }
});
