/**
 * src/transport/grpc-extensions.ts, the seam to grpc-js's internals: the installed grpc-js is
 * the reviewed one (an upgrade fails here first: re-review per docs/grpc-extensions.md); every
 * extension applies to it; importing flwr-ts or creating servers and channels changes nothing
 * until enableGrpcExtensions() is called; what it applies is reported; grpc-js's trace output
 * stays on the replaced paths; and the gRPC Fleet API does not start without the receive guard.
 * The child processes run the built dist/ (jest's setup enables the extensions in-process).
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  GRPC_EXTENSION_NAMES,
  REVIEWED_GRPC_JS_VERSION,
  activeGrpcExtensions,
  enableGrpcExtensions,
  installedGrpcJsVersion,
} from "../../src/transport/grpc-extensions";
import { REPO_ROOT } from "../helpers/fixtures";
import { runNodeScript } from "../helpers/node-script";

const dist = (f: string): string => JSON.stringify(join(REPO_ROOT, "dist", f));

test("the installed grpc-js is the reviewed version, pinned exactly in package.json and package-lock.json", () => {
  expect(installedGrpcJsVersion()).toBe(REVIEWED_GRPC_JS_VERSION);
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as {
    dependencies: Record<string, string>;
  };
  expect(pkg.dependencies["@grpc/grpc-js"]).toBe(REVIEWED_GRPC_JS_VERSION);
  const lock = JSON.parse(readFileSync(join(REPO_ROOT, "package-lock.json"), "utf8")) as {
    packages: Record<string, { version?: string }>;
  };
  expect(lock.packages).toHaveProperty(["node_modules/@grpc/grpc-js", "version"], REVIEWED_GRPC_JS_VERSION);
});

test("every extension applies to the installed grpc-js, and enabling again applies nothing", () => {
  // test/helpers/grpc-extensions-setup.ts enabled them for this file.
  expect(activeGrpcExtensions()).toEqual([...GRPC_EXTENSION_NAMES]);
  const again = enableGrpcExtensions();
  expect(again).toMatchObject({
    grpcJsVersion: REVIEWED_GRPC_JS_VERSION,
    applied: [],
    refused: [],
    active: [...GRPC_EXTENSION_NAMES],
  });
});

/** Prints which grpc-js methods are grpc-js's own, before and after the steps in `body`. */
const PROBE = `
  const own = {
    decoder: require("@grpc/grpc-js/build/src/stream-decoder").StreamDecoder.prototype.write,
    serverSend: require("@grpc/grpc-js/build/src/server-interceptors").BaseServerInterceptingCall.prototype.sendMessage,
    serverSerialize: require("@grpc/grpc-js/build/src/server-interceptors").BaseServerInterceptingCall.prototype.serializeMessage,
    clientFilter: require("@grpc/grpc-js/build/src/compression-filter").CompressionFilter.prototype.sendMessage,
    subchannelSend: require("@grpc/grpc-js/build/src/subchannel-call").Http2SubchannelCall.prototype.sendMessageWithContext,
  };
  const changed = () => {
    const now = {
      decoder: require("@grpc/grpc-js/build/src/stream-decoder").StreamDecoder.prototype.write,
      serverSend: require("@grpc/grpc-js/build/src/server-interceptors").BaseServerInterceptingCall.prototype.sendMessage,
      serverSerialize: require("@grpc/grpc-js/build/src/server-interceptors").BaseServerInterceptingCall.prototype.serializeMessage,
      clientFilter: require("@grpc/grpc-js/build/src/compression-filter").CompressionFilter.prototype.sendMessage,
      subchannelSend: require("@grpc/grpc-js/build/src/subchannel-call").Http2SubchannelCall.prototype.sendMessageWithContext,
    };
    return Object.keys(own).filter((k) => own[k] !== now[k]);
  };
`;

test("importing flwr-ts and creating a server and a channel change nothing; enableGrpcExtensions applies all and reports it", async () => {
  const script = `
    ${PROBE}
    const grpc = require("@grpc/grpc-js");
    require(${dist("index.js")});
    const { startGrpcServer } = require(${dist("transport/grpc-server.js")});
    const { createClient } = require(${dist("transport/channel.js")});
    const ext = require(${dist("transport/grpc-extensions.js")});
    (async () => {
      const server = await startGrpcServer("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), []);
      const Client = grpc.makeGenericClientConstructor({}, "None");
      const client = createClient(Client, "127.0.0.1:" + server.port, grpc.credentials.createInsecure());
      const before = { changed: changed(), active: ext.activeGrpcExtensions() };
      const report = ext.enableGrpcExtensions();
      const after = { changed: changed(), active: ext.activeGrpcExtensions() };
      client.close();
      await server.close(0);
      console.log(JSON.stringify({ before, report, after }));
    })().catch((e) => { console.error(e); process.exit(1); });
  `;
  const run = await runNodeScript(script, [], 30_000);
  expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
  const out = JSON.parse(run.stdout) as {
    before: { changed: string[]; active: string[] };
    report: { applied: string[]; refused: unknown[]; grpcJsVersion: string };
    after: { changed: string[]; active: string[] };
  };
  expect(out.before).toEqual({ changed: [], active: [] });
  expect(out.report).toMatchObject({
    applied: [...GRPC_EXTENSION_NAMES],
    refused: [],
    grpcJsVersion: REVIEWED_GRPC_JS_VERSION,
  });
  expect(out.after.changed.sort()).toEqual([
    "clientFilter",
    "decoder",
    "serverSend",
    "serverSerialize",
    "subchannelSend",
  ]);
  expect(out.after.active).toEqual([...GRPC_EXTENSION_NAMES]);
});

test("an extension whose dependency is not active is refused, and changes nothing", async () => {
  const script = `
    ${PROBE}
    const ext = require(${dist("transport/grpc-extensions.js")});
    const report = ext.enableGrpcExtensions({ only: ["receive-guard", "client-zero-copy-send"] });
    console.log(JSON.stringify({ report, changed: changed() }));
  `;
  const run = await runNodeScript(script, [], 30_000);
  expect(run.code).toBe(0);
  const out = JSON.parse(run.stdout) as {
    report: { applied: string[]; refused: Array<{ name: string; reason: string }> };
    changed: string[];
  };
  expect(out.report.applied).toEqual(["client-zero-copy-send"]);
  expect(out.report.refused).toEqual([{ name: "receive-guard", reason: "needs incremental-decoder" }]);
  expect(out.changed.sort()).toEqual(["clientFilter", "subchannelSend"]);
});

test("the gRPC Fleet API refuses to start without the receive guard; the REST one starts", async () => {
  const script = `
    const { startSuperLink } = require(${dist("superlink/superlink.js")});
    const { silentLogger } = require(${dist("core/logger.js")});
    const base = { driverApiAddress: "127.0.0.1:0", fleetApiAddress: "127.0.0.1:0", database: ":flwr-in-memory-state:" };
    (async () => {
      const refused = await startSuperLink(base, { logger: silentLogger() }).then(() => "started", (e) => ({ code: e.code, message: e.message }));
      const rest = await startSuperLink({ ...base, fleetApiType: "rest" }, { logger: silentLogger() });
      await rest.close(0);
      console.log(JSON.stringify({ refused }));
    })().catch((e) => { console.error(e); process.exit(1); });
  `;
  const run = await runNodeScript(script, [], 30_000);
  expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
  const { refused } = JSON.parse(run.stdout) as { refused: { code: string; message: string } };
  expect(refused.code).toBe("FLWR_INVALID_CONFIG");
  expect(refused.message).toContain("incremental-decoder, receive-guard, server-session-hooks");
  expect(refused.message).toContain("enableGrpcExtensions()");
});

test("grpc-js's trace lines stay on the replaced send paths (GRPC_TRACE)", async () => {
  const script = `
    const grpc = require("@grpc/grpc-js");
    require(${dist("transport/grpc-extensions.js")}).enableGrpcExtensions();
    const { startGrpcServer } = require(${dist("transport/grpc-server.js")});
    const { createClient } = require(${dist("transport/channel.js")});
    const { gatherRequestSerializer, withGather } = require(${dist("transport/grpc-zero-copy.js")});
    const chunks = (v) => ({ chunks: [Buffer.from("ab"), Buffer.from("cde")], length: 5 });
    const method = { path: "/t.Trace/Echo", requestStream: false, responseStream: false,
      requestSerialize: gatherRequestSerializer(chunks), requestDeserialize: (b) => b,
      responseSerialize: withGather(() => Buffer.from("abcde"), chunks), responseDeserialize: (b) => b };
    (async () => {
      const server = await startGrpcServer("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), [
        { definition: { echo: method }, implementation: { echo: (call, cb) => cb(null, {}) } },
      ]);
      const Client = grpc.makeGenericClientConstructor({ echo: method }, "Trace");
      const client = createClient(Client, "127.0.0.1:" + server.port, grpc.credentials.createInsecure());
      const got = await new Promise((ok, fail) => client.echo({}, (e, r) => (e ? fail(e) : ok(r))));
      client.close();
      await server.close(0);
      console.log(got.toString());
    })().catch((e) => { console.error(e); process.exit(1); });
  `;
  const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const proc = spawn(process.execPath, ["-e", script], {
      cwd: REPO_ROOT,
      env: { ...process.env, GRPC_TRACE: "server_call,subchannel_call", GRPC_VERBOSITY: "DEBUG" },
    });
    let stdout = "";
    let stderr = "";
    proc.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
    proc.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  expect(result.code).toBe(0);
  expect(result.stdout.trim()).toBe("abcde");
  expect(result.stderr).toMatch(/server_call \| Request to \/t\.Trace\/Echo sent data frame of size 10/);
  expect(result.stderr).toMatch(/subchannel_call \| \[\d+\] write\(\) called with message of length 10 in 3 chunks/);
});

test("startServer enables the extensions by default and logs it; with grpcExtensions: false it refuses (Fleet API unguarded)", async () => {
  const script = `
    const { startServer } = require(${dist("index.js")});
    (async () => {
      const refused = await startServer({ serverAddress: "127.0.0.1:0", grpcExtensions: false }).then(() => "started", (e) => e.code);
      const controller = new AbortController();
      const ended = await startServer({ serverAddress: "127.0.0.1:0", signal: controller.signal, onReady: () => controller.abort(new Error("stop")) })
        .then(() => "finished", (e) => e.message);
      console.log(JSON.stringify({ refused, ended }));
    })().catch((e) => { console.error(e); process.exit(1); });
  `;
  const run = await runNodeScript(script, [], 30_000);
  expect(run.code).toBe(0);
  expect(JSON.parse(run.stdout)).toEqual({ refused: "FLWR_INVALID_CONFIG", ended: "stop" });
  expect(run.stderr).toContain(
    `startServer enabled grpc-js ${REVIEWED_GRPC_JS_VERSION} extensions process-wide: ${GRPC_EXTENSION_NAMES.join(", ")}`,
  );
});
