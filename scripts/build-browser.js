#!/usr/bin/env node
// Builds the browser SuperNode (src/browser/) into dist/browser/: index.html and one bundle,
// flwr-browser.js, made by esbuild for `platform: "browser"`. Served by
// `flower-superlink --fleet-api-type rest --rest-serve-browser-client` (docs/browser.md).
//
// The bundle holds the same ClientApp / SuperNode / records / auth source as the Node programs.
// No Node built-in is polyfilled: importing one (node:fs, http2, ...) or a Node-only package
// fails the build, naming the importer. The few source modules that have a Node and a browser
// form are swapped here, each listed in BROWSER_REPLACEMENTS with the reason.
"use strict";
const { mkdirSync, copyFileSync, writeFileSync } = require("node:fs");
const path = require("node:path");
const esbuild = require("esbuild");

const root = path.resolve(__dirname, "..");
const src = (...p) => path.join(root, "src", ...p);
// `--entry FILE --outdir DIR` builds another entry the same way (test/browser/bundle.test.ts
// uses it to prove that a Node-only import fails the build).
const argv = process.argv.slice(2);
const option = (name) => (argv.indexOf(name) >= 0 ? path.resolve(argv[argv.indexOf(name) + 1]) : undefined);
const entry = option("--entry") ?? src("browser", "main.ts");
const out = option("--outdir") ?? path.join(root, "dist", "browser");

/** Source module (absolute, without extension) -> its browser form. */
const BROWSER_REPLACEMENTS = new Map([
  // Loads tfjs-node or the pure-JS CPU backend with require(); the page picks webgl/cpu itself.
  [src("example", "tensorflow"), src("browser", "tensorflow-browser.ts")],
  // Reads CIFAR-10 binaries with node:fs; a page has only the synthetic data.
  [src("example", "cifar10"), src("browser", "cifar10-unavailable.ts")],
]);

// Node built-ins and Node-only packages that must never reach the bundle.
const NODE_BUILTINS = new Set(require("node:module").builtinModules);
const NODE_ONLY_PACKAGES = new Set(["@grpc/grpc-js", "better-sqlite3", "commander", "@tensorflow/tfjs-node"]);

const guard = {
  name: "browser-guard",
  setup(build) {
    build.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind === "entry-point") return undefined;
      const spec = args.path;
      const from = path.relative(root, args.importer);
      // Packages are resolved by esbuild itself: their "browser" fields drop guarded Node-only
      // requires (tfjs, seedrandom), and a Node built-in that is still required fails the build.
      if (from.split(path.sep).includes("node_modules")) return undefined;
      if (spec.startsWith(".")) {
        const target = path.resolve(args.resolveDir, spec).replace(/\.(ts|js)$/, "");
        const replacement = BROWSER_REPLACEMENTS.get(target);
        return replacement ? { path: replacement } : undefined;
      }
      // The `buffer` package (not Node's built-in) for the injected Buffer global, below.
      if (spec === "buffer/" && args.importer === src("browser", "buffer-global.ts")) return undefined;
      const bare = spec.replace(/^node:/, "");
      if (spec.startsWith("node:") || NODE_BUILTINS.has(bare.split("/")[0])) {
        return {
          errors: [{ text: `Node-only module "${spec}" imported by ${from}: the browser bundle must not contain it` }],
        };
      }
      const pkg = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0];
      if (pkg === "@grpc/grpc-js" && from.startsWith(path.join("src", "proto") + path.sep)) {
        // The generated message files also define the gRPC service clients; a page uses only the
        // messages, so the client constructor is a stub that throws if anything calls it.
        return { path: src("browser", "grpc-unavailable.ts") };
      }
      if (NODE_ONLY_PACKAGES.has(pkg)) {
        return {
          errors: [{ text: `Node-only package "${spec}" imported by ${from}: the browser bundle must not contain it` }],
        };
      }
      return undefined;
    });
  },
};

async function main() {
  mkdirSync(out, { recursive: true });
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile: path.join(out, "flwr-browser.js"),
    bundle: true,
    platform: "browser",
    format: "iife",
    target: "es2022",
    minify: true,
    legalComments: "eof",
    // The generated protobuf code and the records serde use Node's Buffer (a Uint8Array
    // subclass); in the page it is the `buffer` package, a plain-JS implementation.
    inject: [src("browser", "buffer-global.ts")],
    define: { "process.env.NODE_ENV": '"production"' },
    plugins: [guard],
    metafile: true,
    logLevel: "warning",
  });
  writeFileSync(path.join(out, "meta.json"), JSON.stringify(result.metafile));
  copyFileSync(src("browser", "index.html"), path.join(out, "index.html"));
  const bytes = Object.values(result.metafile.outputs)[0]?.bytes;
  process.stderr.write(
    `build-browser: ${path.relative(root, path.join(out, "flwr-browser.js"))}${bytes ? ` (${(bytes / 1e6).toFixed(2)} MB)` : ""}\n`,
  );
}

main().catch((err) => {
  process.stderr.write(`build-browser failed: ${err && err.message ? err.message : err}\n`);
  process.exit(1);
});
