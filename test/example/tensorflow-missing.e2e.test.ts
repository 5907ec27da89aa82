/**
 * TensorFlow.js is an optional peer dependency of flwr-ts (only the bundled example uses it):
 * without it, the example says what to install. A child process hides the installed packages.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { REPO_ROOT } from "../helpers/fixtures";

test("without @tensorflow/tfjs the example's loader says to install it", () => {
  const script = `
    const Module = require("node:module");
    const resolve = Module._resolveFilename;
    Module._resolveFilename = function (request, ...rest) {
      if (request.startsWith("@tensorflow/")) throw Object.assign(new Error("Cannot find module '" + request + "'"), { code: "MODULE_NOT_FOUND" });
      return resolve.call(this, request, ...rest);
    };
    const { loadTensorFlow } = require(${JSON.stringify(join(REPO_ROOT, "dist", "example", "tensorflow.js"))});
    try { loadTensorFlow(); console.log("loaded"); } catch (e) { console.log(e.code + " " + e.message); }`;
  const result = spawnSync(process.execPath, ["-e", script], { encoding: "utf8", timeout: 30_000 });
  expect(result.stdout.trim()).toBe(
    "FLWR_APP_LOAD_FAILED The example app needs TensorFlow.js: run `npm install @tensorflow/tfjs` (or @tensorflow/tfjs-node) next to flwr-ts",
  );
});
