/**
 * flower-supernode's per-run ClientApp (src/supernode/fab-app.ts): the pyproject.toml reader,
 * FAB id checks, and a real SuperNode (gRPC over loopback) answering a run with a FAB id from
 * the app installed under <flwr-dir>/apps/ and a run without one from the default app.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { loadClientApp } from "../../src/cli/flower-client-app";
import { resolveFlwrDir } from "../../src/cli/flower-supernode";
import { ErrorCode } from "../../src/core/constants";
import { AppLoadError } from "../../src/core/errors";
import { clientAppRefFromPyproject, createFabAppSource, fabProjectDir } from "../../src/supernode/fab-app";
import { startSuperNode } from "../../src/supernode/supernode";
import { TestDriver, memoryLogger, startTestSuperLink } from "./helpers";

const CLIENT_INDEX = resolve(__dirname, "..", "..", "src", "client", "index.ts");
const PYPROJECT = `[build-system]
requires = ["hatchling"]

[project]
name = "demo"
dependencies = [
    "flwr[simulation]>=1.10.0",
    "numpy",
]

[tool.flwr.app]
publisher = "acme"

[tool.flwr.app.components]
serverapp = "server:app"
clientapp = "fabclient:app"   # the app the SuperNode loads

[tool.flwr.app.config]
num-server-rounds = 3
`;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "flwr-ts-fab-"));
  const appModule = (who: string): string =>
    [
      `const { ClientApp, RecordSet, createReply } = require(${JSON.stringify(CLIENT_INDEX)});`,
      `exports.app = new ClientApp().query((m) => createReply(m, new RecordSet({ configsRecords: new Map([["out", { who: "${who}" }]]) })));`,
    ].join("\n");
  const fab = join(dir, "flwr", "apps", "acme", "demo", "1.0.0");
  mkdirSync(fab, { recursive: true });
  writeFileSync(join(fab, "pyproject.toml"), PYPROJECT);
  writeFileSync(join(fab, "fabclient.js"), appModule("fab"));
  mkdirSync(join(dir, "project"));
  writeFileSync(join(dir, "project", "client.js"), appModule("default"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("pyproject.toml: the clientapp component is found among arrays and comments; none is an AppLoadError", () => {
  expect(clientAppRefFromPyproject(PYPROJECT, "p")).toBe("fabclient:app");
  expect(clientAppRefFromPyproject('[tool.flwr.app]\ncomponents.clientapp = "a:b"\n', "p")).toBe("a:b");
  expect(() => clientAppRefFromPyproject("[project]\nname = 'x'\n", "p")).toThrow(AppLoadError);
});

test("FAB ids need exactly one '/', versions no path separators", () => {
  expect(fabProjectDir("acme/demo", "1.0.0", "/f")).toBe(join("/f", "apps", "acme", "demo", "1.0.0"));
  for (const [id, version] of [
    ["acme", "1"],
    ["a/b/c", "1"],
    ["../x", "1"],
    ["a/b", "../../etc"],
    ["a/b", ""],
  ]) {
    expect(() => fabProjectDir(id!, version!, "/f")).toThrow(AppLoadError);
  }
});

test("--flwr-dir falls back to $FLWR_HOME, then $XDG_DATA_HOME/.flwr, then $HOME/.flwr", () => {
  expect(resolveFlwrDir(dir, {})).toBe(resolve(dir));
  expect(resolveFlwrDir(join(dir, "missing"), { FLWR_HOME: "/fh" })).toBe("/fh");
  expect(resolveFlwrDir(undefined, { XDG_DATA_HOME: "/xdg", HOME: "/h" })).toBe(join("/xdg", ".flwr"));
  expect(resolveFlwrDir(undefined, { HOME: "/h" })).toBe(join("/h", ".flwr"));
});

test("a SuperNode answers a FAB run with the installed app, a run without FAB id with the default, an unknown FAB with error 1", async () => {
  const link = await startTestSuperLink({});
  const { logger, lines } = memoryLogger();
  const node = await startSuperNode(
    {
      superlink: link.fleetAddress,
      insecure: true,
      app: createFabAppSource({
        defaultRef: "client:app",
        projectDir: join(dir, "project"),
        flwrDir: join(dir, "flwr"),
        load: loadClientApp,
        logger,
      }),
    },
    { logger },
  );
  const d = new TestDriver(link.driverAddress);
  try {
    const answer = async (fab: { fabId: string; fabVersion: string }) => {
      const runId = await d.createRun(new Map(), fab);
      await d.waitForNode(runId, node.nodeId);
      const { taskId } = await d.push(runId, node.nodeId, "query");
      return (await d.reply(taskId)).message;
    };
    expect((await answer({ fabId: "acme/demo", fabVersion: "1.0.0" })).content!.configsRecords.get("out")).toEqual({
      who: "fab",
    });
    expect((await answer({ fabId: "", fabVersion: "" })).content!.configsRecords.get("out")).toEqual({
      who: "default",
    });
    expect(lines.some((l) => l.msg === "FAB ID is not provided; the default ClientApp will be loaded.")).toBe(true);
    const missing = await answer({ fabId: "acme/other", fabVersion: "2.0" });
    expect(missing.error?.code).toBe(ErrorCode.LOAD_CLIENT_APP_EXCEPTION);
  } finally {
    d.close();
    await node.close(1_000);
    await link.close(0);
  }
});
