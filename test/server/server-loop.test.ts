/**
 * The legacy strategy loop (ServerApp with config + strategy) against an in-memory Driver and
 * fake SuperNodes speaking Flower's RecordSet protocol: message flow, aggregation, failures,
 * timeouts, node discovery, nodes dying mid-round, and the [SUMMARY] output.
 */
import { ConnectionError } from "../../src/core/errors";
import type { FitRes, Metrics } from "../../src/core/records/legacy-types";
import { recordSetToFitIns } from "../../src/core/records/compat";
import { ndarrayToNpy } from "../../src/core/records/npy";
import { RecordSet, type Context } from "../../src/core/records/types";
import { FedAvg, ServerApp, type MetricsAggregationFn } from "../../src/server";
import { FakeDriver, legacyNode } from "./fake-driver";
import { memoryLogger, messagesOf, vectorOf, vectorParameters } from "./helpers";

const context = (): Context => ({ nodeId: 0n, nodeConfig: {}, state: new RecordSet(), runConfig: {} });

const weightedAccuracy: MetricsAggregationFn = (results) => {
  const total = results.reduce((s, [n]) => s + n, 0);
  return { acc: results.reduce((s, [n, m]) => s + n * (m["acc"] as number), 0) / total };
};

function fitRes(weights: number[], numExamples: number, metrics: Metrics = {}, code = 0): FitRes {
  return {
    status: { code, message: code === 0 ? "Success" : "not implemented" },
    parameters: vectorParameters(weights),
    numExamples,
    metrics,
  };
}

const NODE_A = 1n;
const NODE_B = -(2n ** 62n) - 5n; // negative and beyond 2^53: ids stay bigint end to end
const NODE_C = 2n ** 63n - 1n;

describe("legacy ServerApp loop", () => {
  it("runs Flower's message flow and FedAvg aggregation, and prints the summary", async () => {
    const driver = new FakeDriver();
    const seenRound2: number[][] = [];
    const client = (weights: number[], n: number, acc: number) =>
      legacyNode({
        getParameters: () => vectorParameters([0, 0]),
        fit: (ins) => {
          if (ins.config["round"] === 2n || ins.config["round"] === 2) seenRound2.push(vectorOf(ins.parameters));
          return fitRes(weights, n, { acc });
        },
      });
    driver.addNode(NODE_A, client([1, 2], 10, 0.5));
    driver.addNode(NODE_B, client([3, 4], 30, 0.25));
    const out: string[] = [];
    const { logger, lines } = memoryLogger();
    const app = new ServerApp({
      config: { numRounds: 2 },
      strategy: new FedAvg({
        fractionEvaluate: 0,
        minAvailableClients: 2,
        fitMetricsAggregationFn: weightedAccuracy,
        onFitConfigFn: (round) => ({ round: BigInt(round) }),
      }),
    });

    const history = await app.run(driver, context(), { logger, out: (l) => out.push(l) });

    const getParams = driver.sentOfType("get_parameters");
    expect(getParams).toHaveLength(1);
    expect(getParams[0]!.metadata.groupId).toBe("");
    expect(getParams[0]!.metadata.ttl).toBe(3600);
    const train = driver.sentOfType("train");
    expect(train.map((m) => m.metadata.groupId)).toEqual(["1", "1", "2", "2"]);
    expect(new Set(train.map((m) => m.metadata.dstNodeId))).toEqual(new Set([NODE_A, NODE_B]));
    expect(train.every((m) => m.metadata.ttl === 3600 && m.metadata.srcNodeId === 0n)).toBe(true);
    expect(driver.sentOfType("evaluate")).toHaveLength(0);
    // Round 1 aggregate, sent in round 2: (10 * [1, 2] + 30 * [3, 4]) / 40.
    expect(seenRound2).toEqual([
      [2.5, 3.5],
      [2.5, 3.5],
    ]);
    expect(recordSetToFitIns(train[0]!.content!).config).toEqual({ round: 1 });

    expect(history.toString()).toBe("History (metrics, distributed, fit):\n{'acc': [(1, 0.3125), (2, 0.3125)]}\n");
    expect(out[0]).toBe("[SUMMARY]");
    expect(out[1]).toMatch(/^Run finished 2 round\(s\) in \d+\.\d\ds$/);
    expect(out.slice(2)).toEqual(["\tHistory (metrics, distributed, fit):", "\t{'acc': [(1, 0.3125), (2, 0.3125)]}"]);
    const msgs = messagesOf(lines);
    expect(msgs).toContain("Starting Flower ServerApp, config: num_rounds=2, no round_timeout");
    expect(msgs).toContain("configure_fit: strategy sampled 2 clients (out of 2)");
    expect(msgs).toContain("aggregate_fit: received 2 results and 0 failures");
    expect(msgs).toContain("configure_evaluate: no clients selected, skipping evaluation");
    expect(lines.find((l) => l["event"] === "serverapp.summary")?.["rounds"]).toBe(2);
  });

  it("runs federated evaluation and records the weighted loss", async () => {
    const driver = new FakeDriver();
    driver.addNode(
      NODE_A,
      legacyNode({
        fit: () => fitRes([1], 1),
        evaluate: () => ({ status: { code: 0, message: "" }, loss: 1.0, numExamples: 10, metrics: {} }),
      }),
    );
    driver.addNode(
      NODE_B,
      legacyNode({
        fit: () => fitRes([1], 1),
        evaluate: () => ({ status: { code: 0, message: "" }, loss: 2.0, numExamples: 30, metrics: {} }),
      }),
    );
    const app = new ServerApp({
      config: { numRounds: 1 },
      strategy: new FedAvg({ initialParameters: vectorParameters([0]) }),
    });
    const history = await app.run(driver, context());
    expect(driver.sentOfType("get_parameters")).toHaveLength(0);
    expect(driver.sentOfType("evaluate").map((m) => m.metadata.groupId)).toEqual(["1", "1"]);
    expect(history.lossesDistributed).toEqual([[1, 1.75]]);
    expect(history.toString()).toBe("History (loss, distributed):\n\tround 1: 1.75\n");
  });

  describe("failures", () => {
    function threeNodes(driver: FakeDriver, third: Parameters<FakeDriver["addNode"]>[1]): void {
      driver.addNode(NODE_A, legacyNode({ fit: () => fitRes([2], 10) }));
      driver.addNode(NODE_B, legacyNode({ fit: () => fitRes([4], 10) }));
      driver.addNode(NODE_C, third);
    }

    it("aggregates the other results when a client replies with an error (acceptFailures: true)", async () => {
      const driver = new FakeDriver();
      threeNodes(driver, async () => ({ code: 2, reason: "<class 'ValueError'>:<'boom'>" }));
      const { logger, lines } = memoryLogger();
      const app = new ServerApp({
        config: { numRounds: 2 },
        strategy: new FedAvg({ fractionEvaluate: 0, initialParameters: vectorParameters([0]) }),
      });
      await app.run(driver, context(), { logger });
      expect(messagesOf(lines)).toContain("aggregate_fit: received 2 results and 1 failures");
      const round2 = driver.sentOfType("train").filter((m) => m.metadata.groupId === "2");
      expect(round2.map((m) => vectorOf(recordSetToFitIns(m.content!).parameters))).toEqual([[3], [3], [3]]);
      const failure = lines.find((l) => l["event"] === "serverapp.client-failed");
      expect(String(failure?.["msg"])).toContain("boom");
    });

    it("skips the round's aggregation on any failure when acceptFailures is false", async () => {
      const driver = new FakeDriver();
      threeNodes(driver, async () => ({ code: 2, reason: "boom" }));
      const app = new ServerApp({
        config: { numRounds: 2 },
        strategy: new FedAvg({ fractionEvaluate: 0, acceptFailures: false, initialParameters: vectorParameters([7]) }),
      });
      const history = await app.run(driver, context());
      const round2 = driver.sentOfType("train").filter((m) => m.metadata.groupId === "2");
      expect(round2.map((m) => vectorOf(recordSetToFitIns(m.content!).parameters))).toEqual([[7], [7], [7]]);
      expect(history.isEmpty).toBe(true);
    });

    it.each([
      ["a wrong shape", () => fitRes([1, 2, 3], 10)],
      [
        "a wrong tensor count",
        () => ({ ...fitRes([1], 10), parameters: { tensors: [], tensorType: "numpy.ndarray" } }),
      ],
      [
        "undecodable bytes",
        () => ({
          ...fitRes([1], 10),
          parameters: { tensors: [new Uint8Array([1, 2, 3])], tensorType: "numpy.ndarray" },
        }),
      ],
      [
        "a wrong dtype",
        () => ({
          ...fitRes([1], 10),
          parameters: {
            tensors: [ndarrayToNpy({ dtype: "float64", shape: [1], data: new Float64Array([9]) })],
            tensorType: "numpy.ndarray",
          },
        }),
      ],
    ])("counts one result with %s as that client's failure; the run goes on", async (_what, bad) => {
      const driver = new FakeDriver();
      threeNodes(driver, legacyNode({ fit: bad }));
      const { logger, lines } = memoryLogger();
      const app = new ServerApp({
        config: { numRounds: 2 },
        strategy: new FedAvg({ fractionEvaluate: 0, initialParameters: vectorParameters([0]) }),
      });
      await app.run(driver, context(), { logger });
      expect(messagesOf(lines).filter((m) => m === "aggregate_fit: received 2 results and 1 failures")).toHaveLength(2);
      const bads = lines.filter((l) => l["event"] === "serverapp.bad-result");
      expect(bads.map((l) => l["nodeId"])).toEqual([NODE_C.toString(), NODE_C.toString()]);
      const round2 = driver.sentOfType("train").filter((m) => m.metadata.groupId === "2");
      expect(round2.map((m) => vectorOf(recordSetToFitIns(m.content!).parameters))).toEqual([[3], [3], [3]]);
    });

    it("with acceptFailures false, an ill-shaped result skips the round's aggregation instead of ending the run", async () => {
      const driver = new FakeDriver();
      threeNodes(driver, legacyNode({ fit: () => fitRes([1, 2], 10) }));
      const app = new ServerApp({
        config: { numRounds: 2 },
        strategy: new FedAvg({ fractionEvaluate: 0, acceptFailures: false, initialParameters: vectorParameters([7]) }),
      });
      await app.run(driver, context());
      const round2 = driver.sentOfType("train").filter((m) => m.metadata.groupId === "2");
      expect(round2.map((m) => vectorOf(recordSetToFitIns(m.content!).parameters))).toEqual([[7], [7], [7]]);
    });

    it("counts a non-OK status as a failure", async () => {
      const driver = new FakeDriver();
      threeNodes(driver, legacyNode({ fit: () => fitRes([100], 10, {}, 3) }));
      const { logger, lines } = memoryLogger();
      const app = new ServerApp({
        config: { numRounds: 1 },
        strategy: new FedAvg({ fractionEvaluate: 0, initialParameters: vectorParameters([0]) }),
      });
      await app.run(driver, context(), { logger });
      expect(messagesOf(lines)).toContain("aggregate_fit: received 2 results and 1 failures");
    });

    it("counts a client that does not answer within the round timeout as a failure", async () => {
      const driver = new FakeDriver();
      threeNodes(driver, async () => "silent");
      const { logger, lines } = memoryLogger();
      const app = new ServerApp({
        config: { numRounds: 1, roundTimeoutSeconds: 0.3 },
        strategy: new FedAvg({ fractionEvaluate: 0, initialParameters: vectorParameters([0]) }),
      });
      await app.run(driver, context(), { logger });
      expect(driver.sentOfType("train").every((m) => m.metadata.ttl === 0.3)).toBe(true);
      expect(messagesOf(lines)).toContain("aggregate_fit: received 2 results and 1 failures");
      expect(messagesOf(lines).some((m) => m.includes("Timeout reached"))).toBe(true);
    });

    it("completes the round with the others when a node dies mid-round (NODE_UNAVAILABLE)", async () => {
      const driver = new FakeDriver();
      threeNodes(driver, async () => {
        setImmediate(() => driver.killNode(NODE_C));
        return "silent";
      });
      const { logger, lines } = memoryLogger();
      const app = new ServerApp({
        config: { numRounds: 1 },
        strategy: new FedAvg({ fractionEvaluate: 0, initialParameters: vectorParameters([0]) }),
      });
      await app.run(driver, context(), { logger });
      expect(messagesOf(lines)).toContain("aggregate_fit: received 2 results and 1 failures");
      expect(messagesOf(lines).some((m) => m.includes("Node Unavailable"))).toBe(true);
    });
  });

  it("waits for min_available_clients, discovering nodes through GetNodes", async () => {
    const driver = new FakeDriver();
    driver.addNode(NODE_A, legacyNode({ fit: () => fitRes([1], 1) }));
    const { logger, lines } = memoryLogger();
    const app = new ServerApp({
      config: { numRounds: 1 },
      strategy: new FedAvg({ fractionEvaluate: 0, minAvailableClients: 2, initialParameters: vectorParameters([0]) }),
    });
    const running = app.run(driver, context(), { logger });
    setTimeout(() => driver.addNode(NODE_B, legacyNode({ fit: () => fitRes([3], 1) })), 300);
    await running;
    expect(driver.getNodeIdsCalls).toBeGreaterThan(1);
    expect(lines.some((l) => l["event"] === "serverapp.waiting-for-clients")).toBe(true);
    expect(driver.sentOfType("train")).toHaveLength(2);
  });

  it("gets initial parameters from one random client when the strategy has none", async () => {
    const driver = new FakeDriver();
    driver.addNode(
      NODE_A,
      legacyNode({ getParameters: () => vectorParameters([5, 6]), fit: (ins) => fitRes(vectorOf(ins.parameters), 1) }),
    );
    const app = new ServerApp({
      config: { numRounds: 1 },
      strategy: new FedAvg({ fractionEvaluate: 0, minFitClients: 1, minAvailableClients: 1 }),
    });
    await app.run(driver, context());
    const [train] = driver.sentOfType("train");
    expect(vectorOf(recordSetToFitIns(train!.content!).parameters)).toEqual([5, 6]);
  });

  it("fails the run when the SuperLink connection fails", async () => {
    const driver = new FakeDriver();
    driver.failGetNodes = new ConnectionError("GetNodes to the SuperLink failed (UNAVAILABLE): gone");
    const app = new ServerApp({
      config: { numRounds: 1 },
      strategy: new FedAvg({ initialParameters: vectorParameters([0]) }),
    });
    await expect(app.run(driver, context())).rejects.toThrow("GetNodes to the SuperLink failed (UNAVAILABLE): gone");
  });

  it("stops waiting when aborted", async () => {
    const driver = new FakeDriver();
    const controller = new AbortController();
    const app = new ServerApp({
      config: { numRounds: 1 },
      strategy: new FedAvg({ initialParameters: vectorParameters([0]) }),
    });
    const running = app.run(driver, context(), { signal: controller.signal });
    setTimeout(() => controller.abort(new Error("stop now")), 100);
    await expect(running).rejects.toThrow("stop now");
  });
});
