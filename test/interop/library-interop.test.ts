/**
 * The older Flower guide's "SSL-enabled Server and Client" snippets (guide-app/: Flower 1.10's
 * `start_server` / `start_numpy_client` in Python and their flwr-ts translation with
 * `startServer` / `startNumpyClient`) as separate processes over TLS, in every combination:
 *   ours/ours (grpc-bidi), our server + Python clients (grpc-bidi, Flower's default),
 *   Python server + our clients (grpc-bidi), our server + Python clients with grpc-rere,
 *   and our grpc-rere client against Python's grpc-bidi-only server (a clear error).
 * Every server and client must exit by itself with code 0 after the run: the servers disconnect
 * their clients (ReconnectIns / reconnect + DeleteNode grace), nothing is killed.
 *
 * The app is deterministic: both clients start from [1, 2]; fit adds the client's offset (1 or
 * 2) with 1 or 3 examples, so FedAvg adds 1.75 per round; evaluate's loss is w[0] + offset.
 * Distributed losses must be exactly 4.5 and 6.25 (all values are exact in float32).
 *
 * The Python cases run only when FLWR_PY_SRC points at a Flower 1.10 `src/py` tree
 * (FLWR_PY_SHIMS adds the `Crypto`/`iterators` shims, FLWR_PYTHON picks the interpreter); see
 * docs/interop.md. They spawn dist/ (run `npm run build` first).
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { Peer, freePort, waitForTcp } from "../helpers/peer-process";

const PY_SRC = process.env["FLWR_PY_SRC"];
const PY_SHIMS = process.env["FLWR_PY_SHIMS"];
const PYTHON = process.env["FLWR_PYTHON"] ?? "/usr/bin/python3";
const APP_DIR = join(__dirname, "guide-app");
const SCENARIO_TIMEOUT_MS = 180_000;
const SKIP_REASON =
  "skipped: set FLWR_PY_SRC to a Flower 1.10.0 src/py tree (and FLWR_PY_SHIMS) to run; see docs/interop.md";
if (!PY_SRC) process.stderr.write(`library-interop.test.ts: Python cases ${SKIP_REASON}\n`);
const itPython = PY_SRC ? it : it.skip;

type Impl = "ts" | "py";

const EXPECTED_HISTORY = {
  losses_distributed: [
    [1, 4.5],
    [2, 6.25],
  ],
};
const EXPECTED_RECEIVED = {
  fit: [
    [1, 2],
    [2.75, 3.75],
  ],
  evaluate: [
    [2.75, 3.75],
    [4.5, 5.5],
  ],
};
/** The two clients: offset, examples, and the address each dials (both names are in the certificate). */
const CLIENTS = [
  { offset: 1, examples: 1, host: "127.0.0.1" },
  { offset: 2, examples: 3, host: "localhost" },
];

/** The JSON after `prefix ` on its own line of `output`. */
function jsonLine(output: string, prefix: string): unknown {
  const line = output.split("\n").find((l) => l.startsWith(`${prefix} `));
  if (line === undefined) throw new Error(`no "${prefix}" line in:\n${output}`);
  return JSON.parse(line.slice(prefix.length + 1));
}

describe(`guide snippets start_server / start_numpy_client over TLS${PY_SRC ? "" : ` (Python cases ${SKIP_REASON})`}`, () => {
  let fx: Fixtures;
  let work: string;
  let peers: Peer[] = [];

  const pythonEnv = (): NodeJS.ProcessEnv => ({
    ...process.env,
    PYTHONPATH: [PY_SRC, PY_SHIMS].filter(Boolean).join(":"),
    PYTHONDONTWRITEBYTECODE: "1",
    PYTHONUNBUFFERED: "1",
    FLWR_TELEMETRY_ENABLED: "0",
    FLWR_HOME: join(work, "flwr-home"),
  });
  const start = (name: string, impl: Impl, script: string, args: string[]): Peer => {
    const p =
      impl === "py"
        ? new Peer(name, PYTHON, [join(APP_DIR, `${script}.py`), ...args], pythonEnv(), work)
        : new Peer(name, process.execPath, [join(APP_DIR, `${script}.js`), ...args], process.env, work);
    peers.push(p);
    return p;
  };

  beforeAll(() => {
    if (!existsSync(join(REPO_ROOT, "dist", "index.js"))) {
      throw new Error("dist/index.js is missing: run `npm run build` before the interop tests");
    }
    if (PY_SRC && !existsSync(join(PY_SRC, "flwr", "server", "app.py"))) {
      throw new Error(`FLWR_PY_SRC=${PY_SRC} is not a Flower src/py tree (no flwr/server/app.py)`);
    }
    fx = generateFixtures(1);
  });
  afterAll(() => fx?.cleanup());
  beforeEach(() => {
    work = mkdtempSync(join(tmpdir(), "flwr-library-interop-"));
    peers = [];
  });
  afterEach(async () => {
    // Only reached with processes still running when a test failed.
    await Promise.all(peers.map((p) => p.stop()));
    rmSync(work, { recursive: true, force: true });
  });

  /**
   * Starts the server, then the two clients once it listens; every process must exit 0 by
   * itself, the server with the expected History, each client having received exactly the
   * expected weights.
   */
  async function runGuide(serverImpl: Impl, clientImpl: Impl, transport?: "grpc-rere"): Promise<Peer[]> {
    const port = await freePort();
    const certDir = dirname(fx.caCert);
    const server = start(`${serverImpl}-server`, serverImpl, "server", [String(port), certDir, "2"]);
    await waitForTcp(port, server, 60_000);
    const clients = CLIENTS.map((c, i) =>
      start(`${clientImpl}-client-${i + 1}`, clientImpl, "client", [
        `${c.host}:${port}`,
        fx.caCert,
        String(c.offset),
        String(c.examples),
        ...(transport ? [transport] : []),
      ]),
    );
    const report = (): string => peers.map((p) => p.tail()).join("\n");
    const serverCode = await server.waitForExit(SCENARIO_TIMEOUT_MS - 60_000);
    if (serverCode !== 0) throw new Error(`server exited with ${serverCode}\n${report()}`);
    expect(jsonLine(server.output, "HISTORY")).toEqual(EXPECTED_HISTORY);
    // After the server returned, each client ends on its own (no signal is sent to it).
    for (const client of clients) {
      const code = await client.waitForExit(30_000);
      if (code !== 0) throw new Error(`${client.name} exited with ${code}\n${report()}`);
      expect(jsonLine(client.output, "RECEIVED")).toEqual(EXPECTED_RECEIVED);
      expect(client.output).not.toMatch(/Traceback|retrying/);
    }
    expect(server.output).not.toMatch(/Traceback/);
    return [server, ...clients];
  }

  it(
    "our server + our clients (grpc-bidi, the default)",
    async () => {
      const [server] = await runGuide("ts", "ts");
      expect(server!.output).toMatch(/Disconnected 2 of 2 grpc-bidi client\(s\) \(2 answered DisconnectRes/);
    },
    SCENARIO_TIMEOUT_MS,
  );

  itPython(
    "our server + Python start_numpy_client (grpc-bidi, Flower's default)",
    async () => {
      const [server, ...clients] = await runGuide("ts", "py");
      expect(server!.output).toMatch(/Disconnected 2 of 2 grpc-bidi client\(s\)/);
      for (const c of clients) expect(c.output).toMatch(/Disconnect and shut down/);
    },
    SCENARIO_TIMEOUT_MS,
  );

  itPython(
    "Python start_server + our startNumpyClient (grpc-bidi)",
    async () => {
      const [server, ...clients] = await runGuide("py", "ts");
      expect(server!.output).toMatch(/Flower ECE: gRPC server running \(2 rounds\), SSL is enabled/);
      for (const c of clients) expect(c.output).toMatch(/Disconnect and shut down/);
    },
    SCENARIO_TIMEOUT_MS,
  );

  itPython(
    'our server + Python start_numpy_client(transport="grpc-rere"): the clients unregister and exit',
    async () => {
      const [server, ...clients] = await runGuide("ts", "py", "grpc-rere");
      expect(server!.output).toMatch(/Disconnected 2 of 2 grpc-rere node\(s\)/);
      expect(server!.output).not.toMatch(/did not unregister/);
      for (const c of clients) expect(c.output).toMatch(/Disconnect and shut down/);
    },
    SCENARIO_TIMEOUT_MS,
  );

  itPython(
    'our client with transport "grpc-rere" against Python start_server (grpc-bidi only) fails at once, naming grpc-bidi',
    async () => {
      const port = await freePort();
      const server = start("py-server", "py", "server", [String(port), dirname(fx.caCert), "2"]);
      await waitForTcp(port, server, 60_000);
      const client = start("ts-client", "ts", "client", [`127.0.0.1:${port}`, fx.caCert, "1", "1", "grpc-rere"]);
      expect(await client.waitForExit(30_000)).toBe(1);
      expect(client.output).toMatch(/does not implement the grpc-rere Fleet API.*transport: "grpc-bidi"/);
      expect(client.output).not.toMatch(/--superlink/);
    },
    SCENARIO_TIMEOUT_MS,
  );
});
