/**
 * runServerApp end to end in one process: a real SuperLink over TLS, fake SuperNodes speaking
 * Flower's legacy RecordSet protocol on the Fleet API, and the legacy FedAvg loop.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AppLoadError, ConnectionError, InvalidConfigError } from "../../src/core/errors";
import { recordSetToFitIns } from "../../src/core/records/compat";
import type { FitRes } from "../../src/core/records/legacy-types";
import { FedAvg, ServerApp } from "../../src/server";
import type { SuperLinkHandle } from "../../src/superlink/superlink";
import { runServerApp } from "../../src/serverapp/run-server-app";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { legacyNode } from "../server/fake-driver";
import { memoryLogger, vectorOf, vectorParameters } from "../server/helpers";
import { FakeSuperNode, startTestSuperLink } from "./helpers";

let fx: Fixtures;
let ca: Buffer;
let tmp: string;
const cleanups: Array<() => unknown> = [];

beforeAll(() => {
  fx = generateFixtures(1);
  ca = fx.read(fx.caCert);
  tmp = mkdtempSync(join(tmpdir(), "flwr-ts-serverapp-"));
});
afterAll(() => {
  fx.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function superlink(): Promise<SuperLinkHandle> {
  const link = await startTestSuperLink(fx);
  cleanups.push(() => link.close(0));
  return link;
}

async function node(
  link: SuperLinkHandle,
  handler: Parameters<typeof FakeSuperNode.start>[2],
  pingInterval = 30,
): Promise<FakeSuperNode> {
  const n = await FakeSuperNode.start(link.fleetAddress, ca, handler, pingInterval);
  cleanups.push(() => n.die());
  return n;
}

const fitRes = (weights: number[], n: number, acc: number): FitRes => ({
  status: { code: 0, message: "Success" },
  parameters: vectorParameters(weights),
  numExamples: n,
  metrics: { acc },
});

function strategy(extra: ConstructorParameters<typeof FedAvg>[0] = {}): FedAvg {
  return new FedAvg({
    fractionEvaluate: 0,
    minAvailableClients: 2,
    fitMetricsAggregationFn: (results) => {
      const total = results.reduce((s, [n]) => s + n, 0);
      return { acc: results.reduce((s, [n, m]) => s + n * (m["acc"] as number), 0) / total };
    },
    ...extra,
  });
}

test("runs a 2-round FedAvg over TLS, prints the summary and writes the history JSON", async () => {
  const link = await superlink();
  const a = await node(
    link,
    legacyNode({ getParameters: () => vectorParameters([0, 0]), fit: () => fitRes([1, 2], 10, 0.5) }),
  );
  const b = await node(
    link,
    legacyNode({ getParameters: () => vectorParameters([0, 0]), fit: () => fitRes([3, 4], 30, 0.25) }),
  );
  const out: string[] = [];
  const { logger, lines } = memoryLogger("info");
  const historyJsonPath = join(tmp, "history.json");

  const history = await runServerApp(
    {
      app: new ServerApp({ config: { numRounds: 2 }, strategy: strategy() }),
      superlink: link.driverAddress,
      rootCertificates: ca,
      historyJsonPath,
    },
    { logger, out: (l) => out.push(l) },
  );

  const created = lines.find((l) => l["event"] === "serverapp.run-created");
  expect(created?.["runId"]).toMatch(/^-?\d+$/);
  const types = [...a.received, ...b.received].map((m) => `${m.metadata.messageType}:${m.metadata.groupId}`).sort();
  expect(types).toEqual(["get_parameters:", "train:1", "train:1", "train:2", "train:2"]);
  const round2 = a.received.find((m) => m.metadata.groupId === "2")!;
  expect(vectorOf(recordSetToFitIns(round2.content!).parameters)).toEqual([2.5, 3.5]);
  expect(String(created?.["runId"])).toBe(round2.metadata.runId.toString());

  expect(history.toString()).toBe("History (metrics, distributed, fit):\n{'acc': [(1, 0.3125), (2, 0.3125)]}\n");
  expect(out.slice(0, 1)).toEqual(["[SUMMARY]"]);
  expect(out.slice(2)).toEqual(["\tHistory (metrics, distributed, fit):", "\t{'acc': [(1, 0.3125), (2, 0.3125)]}"]);
  expect(JSON.parse(readFileSync(historyJsonPath, "utf8"))).toEqual({
    lossesDistributed: [],
    lossesCentralized: [],
    metricsDistributedFit: {
      acc: [
        [1, 0.3125],
        [2, 0.3125],
      ],
    },
    metricsDistributed: {},
    metricsCentralized: {},
  });
});

test("a SuperNode that dies mid-round fails only its own task; the round completes", async () => {
  const link = await superlink();
  await node(link, legacyNode({ fit: () => fitRes([2], 10, 1) }));
  const dying: FakeSuperNode = await node(
    link,
    async () => {
      setImmediate(() => void dying.die());
      return "silent";
    },
    1,
  );
  const { logger, lines } = memoryLogger("info");
  const history = await runServerApp(
    {
      app: new ServerApp({
        config: { numRounds: 1 },
        strategy: strategy({ initialParameters: vectorParameters([0]) }),
      }),
      superlink: link.driverAddress,
      rootCertificates: ca,
    },
    { logger },
  );
  expect(lines.map((l) => l["msg"])).toContain("aggregate_fit: received 1 results and 1 failures");
  const failure = lines.find((l) => l["event"] === "serverapp.client-failed");
  expect(failure?.["nodeId"]).toBe(dying.nodeId.toString());
  expect(String(failure?.["msg"])).toContain("Node Unavailable");
  expect(history.metricsDistributedFit.get("acc")).toEqual([[1, 1]]);
});

test("fails with a ConnectionError when the SuperLink goes away during the run (and stays away past the retry deadline)", async () => {
  const link = await superlink();
  const { logger } = memoryLogger("info");
  const running = runServerApp(
    {
      app: new ServerApp({
        config: { numRounds: 1 },
        strategy: strategy({ initialParameters: vectorParameters([0]) }),
      }),
      superlink: link.driverAddress,
      rootCertificates: ca,
      driver: { retryDeadlineMs: 1_000 },
    },
    { logger },
  );
  // The loop waits for 2 clients, polling GetNodes; then the SuperLink stops.
  setTimeout(() => void link.close(0), 300);
  await expect(running).rejects.toThrow(ConnectionError);
});

test("refuses an object that is not a ServerApp, and a history path in a missing directory", async () => {
  const { logger } = memoryLogger("info");
  await expect(
    runServerApp({ app: { run: () => undefined }, superlink: "127.0.0.1:1", insecure: true }, { logger }),
  ).rejects.toThrow(AppLoadError);
  await expect(
    runServerApp(
      {
        app: new ServerApp(),
        superlink: "127.0.0.1:1",
        insecure: true,
        historyJsonPath: join(tmp, "missing", "h.json"),
      },
      { logger },
    ),
  ).rejects.toThrow(InvalidConfigError);
});
