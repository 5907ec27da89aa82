/**
 * The flwr-ts shared-content extension end to end (docs/protocol.md, "Shared content"), with the
 * built daemons (dist/), TLS and node authentication: a FedAvg ServerApp whose 1 MB model goes to
 * 3 SuperNodes uploads each round's broadcast once (the SuperLink's Driver API received-bytes
 * metric), every node gets the same correct bytes (the History is exact), and the shared content
 * is freed when the run's tasks are done. With a 20 MB model the delivered broadcast goes to its
 * spill file and the answers are read from there (src/state/content-spill.ts): the same bytes.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { requireDist } from "../helpers/dist";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { Peer } from "../helpers/peer-process";
import { superlinkArgs } from "../faults/helpers";

const TS_APP_DIR = join(REPO_ROOT, "test", "interop", "ts-app");
const NODES = 3;

let fx: Fixtures;
let work: string;
const peers: Peer[] = [];

beforeAll(() => {
  requireDist();
  fx = generateFixtures(NODES);
}, 180_000);
afterAll(() => fx?.cleanup());
beforeEach(() => {
  work = mkdtempSync(join(tmpdir(), "flwr-ts-shared-content-"));
});
afterEach(async () => {
  const links = peers.filter((p) => p.name === "superlink");
  await Promise.all(peers.filter((p) => p.name !== "superlink").map((p) => p.stop()));
  await Promise.all(links.map((p) => p.stop()));
  peers.splice(0);
  rmSync(work, { recursive: true, force: true });
});

const start = (name: string, bin: string, args: string[], env: NodeJS.ProcessEnv = process.env): Peer => {
  const p = new Peer(name, process.execPath, [join(REPO_ROOT, "bin", bin), ...args], env, work);
  peers.push(p);
  return p;
};

/** name{labels} -> value of the SuperLink's Prometheus metrics. */
async function metrics(address: string): Promise<Map<string, number>> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

test.each([
  ["1 MB", 250_000],
  ["20 MB, spilled once delivered", 5_000_000],
])(
  "a broadcast is uploaded once per round; every node gets the same bytes (%s)",
  async (_name, floats) => {
    const PAYLOAD_BYTES = floats * 4;
    const superlink = start("superlink", "flower-superlink", [
      ...superlinkArgs(fx),
      "--metrics-address",
      "127.0.0.1:0",
    ]);
    const ready = await superlink.waitFor(/\{[^\n]*"event":"superlink\.ready"[^\n]*\}/, 30_000);
    const { driverAddress, fleetAddress, metricsAddress } = JSON.parse(ready[0]) as Record<string, string>;
    const nodes = Array.from({ length: NODES }, (_, i) =>
      start(`supernode-${i + 1}`, "flower-client-app", [
        "client:app",
        "--dir",
        TS_APP_DIR,
        "--root-certificates",
        fx.caCert,
        "--superlink",
        fleetAddress!,
        "--auth-supernode-private-key",
        fx.clientPrivateKeys[i]!,
        "--auth-supernode-public-key",
        fx.clientPublicKeys[i]!,
      ]),
    );
    await Promise.all(nodes.map((n) => n.waitFor(/"event":"supernode\.ready"/, 30_000)));
    const serverApp = start(
      "serverapp",
      "flower-server-app",
      ["broadcast-server:app", "--dir", TS_APP_DIR, "--root-certificates", fx.caCert, "--superlink", driverAddress!],
      { ...process.env, BROADCAST_FLOATS: String(floats), BROADCAST_CLIENTS: String(NODES) },
    );
    expect(await serverApp.waitForExit(120_000)).toBe(0);
    // Centralized loss = mean of the weights: every node trained on exactly the bytes sent.
    expect(serverApp.output).toMatch(
      /History \(loss, centralized\):[\s\S]*round 0: 0\.0[\s\S]*round 1: 1\.0[\s\S]*round 2: 2\.0/,
    );
    const m = await metrics(metricsAddress!);
    const shared = m.get('flwr_superlink_driver_received_bytes_total{method="PushSharedTaskIns"}') ?? 0;
    const plain = m.get('flwr_superlink_driver_received_bytes_total{method="PushTaskIns"}') ?? 0;
    // 2 rounds x (fit + evaluate) = 4 broadcasts to 3 nodes: 12 payloads without sharing. Once each,
    // plus at most one upload again for content the SuperLink freed between two pushes.
    expect(shared).toBeGreaterThanOrEqual(4 * PAYLOAD_BYTES);
    expect(shared).toBeLessThan(6 * PAYLOAD_BYTES);
    expect(plain).toBeLessThan(PAYLOAD_BYTES);
    expect(m.get("flwr_superlink_task_ins_pushed_total")).toBe(4 * NODES);
    for (const n of nodes) expect(n.running).toBe(true);
  },
  180_000,
);
