/** FedAvg's sampling and min-clients rules, option checks, FedProx and FedMedian, and the client pool. */
import { InvalidConfigError } from "../../src/core/errors";
import type { FitRes } from "../../src/core/records/legacy-types";
import { SimpleClientManager, driverNodeDiscovery } from "../../src/server/client-manager";
import type { ClientProxy } from "../../src/server/client-proxy";
import { FedAvg, FedMedian, FedProx, FedAdam, type FitResult } from "../../src/server/strategy";
import { FakeDriver } from "./fake-driver";
import { memoryLogger, vectorOf, vectorParameters } from "./helpers";

const proxy = (cid: string): ClientProxy => ({ cid }) as unknown as ClientProxy;

function managerWith(n: number, opts: ConstructorParameters<typeof SimpleClientManager>[0] = {}): SimpleClientManager {
  const m = new SimpleClientManager(opts);
  for (let i = 0; i < n; i++) m.register(proxy(`c${i}`));
  return m;
}

function fitResult(cid: string, weights: number[], n: number): FitResult {
  const res: FitRes = {
    status: { code: 0, message: "" },
    parameters: vectorParameters(weights),
    numExamples: n,
    metrics: {},
  };
  return [proxy(cid), res];
}

describe("FedAvg sampling", () => {
  it("samples max(int(available * fraction), min_clients) and waits for min_available_clients", () => {
    const s = new FedAvg({
      fractionFit: 0.5,
      minFitClients: 2,
      minAvailableClients: 3,
      fractionEvaluate: 0.1,
      minEvaluateClients: 1,
    });
    expect(s.numFitClients(10)).toEqual([5, 3]);
    expect(s.numFitClients(3)).toEqual([2, 3]);
    expect(s.numFitClients(7)).toEqual([3, 3]); // int(3.5) = 3
    expect(s.numEvaluationClients(10)).toEqual([1, 3]);
    expect(s.numEvaluationClients(29)).toEqual([2, 3]);
  });

  it("has Flower's defaults", () => {
    const s = new FedAvg();
    expect([s.fractionFit, s.fractionEvaluate, s.minFitClients, s.minEvaluateClients, s.minAvailableClients]).toEqual([
      1, 1, 2, 2, 2,
    ]);
    expect(s.acceptFailures).toBe(true);
    expect(String(s)).toBe("FedAvg(accept_failures=True)");
  });

  it("configures every available client with the round config", async () => {
    const s = new FedAvg({ onFitConfigFn: (r) => ({ epochs: BigInt(r) }) });
    const manager = managerWith(4);
    const pairs = await s.configureFit(3, vectorParameters([1]), manager);
    expect(new Set(pairs.map(([c]) => c.cid))).toEqual(new Set(["c0", "c1", "c2", "c3"]));
    expect(pairs[0]![1].config).toEqual({ epochs: 3n });
  });

  it("samples a random subset of distinct clients", async () => {
    const s = new FedAvg({ fractionFit: 0.5, minFitClients: 1, minAvailableClients: 1 });
    const pairs = await s.configureFit(1, vectorParameters([1]), managerWith(6));
    expect(pairs).toHaveLength(3);
    expect(new Set(pairs.map(([c]) => c.cid)).size).toBe(3);
  });

  it("selects nobody when too few clients connect before the wait ends", async () => {
    const s = new FedAvg({ minFitClients: 3, minAvailableClients: 3 });
    const pairs = await s.configureFit(1, vectorParameters([1]), managerWith(2, { waitTimeoutMs: 50 }));
    expect(pairs).toEqual([]);
  });

  it("like Flower, still samples after the wait ends if the sample size is available", async () => {
    const s = new FedAvg({ minFitClients: 2, minAvailableClients: 3 });
    const pairs = await s.configureFit(1, vectorParameters([1]), managerWith(2, { waitTimeoutMs: 50 }));
    expect(pairs).toHaveLength(2);
  });

  it("skips federated evaluation when fractionEvaluate is 0", async () => {
    const s = new FedAvg({ fractionEvaluate: 0 });
    expect(await s.configureEvaluate(1, vectorParameters([1]), managerWith(5))).toEqual([]);
  });

  it("refuses nonsense options with InvalidConfigError", () => {
    expect(() => new FedAvg({ fractionFit: 1.5 })).toThrow(InvalidConfigError);
    expect(() => new FedAvg({ minFitClients: -1 })).toThrow(/minFitClients/);
    expect(() => new FedAvg({ minAvailableClients: 1.5 })).toThrow(/minAvailableClients/);
    expect(() => new FedAdam({} as never)).toThrow(/initialParameters/);
    expect(() => new FedProx({} as never)).toThrow(/proximalMu/);
  });

  it("warns like Flower when min_available_clients is below min_fit_clients", () => {
    const { logger, lines } = memoryLogger();
    const s = new FedAvg({ minFitClients: 3, minAvailableClients: 2 });
    s.setLogger(logger);
    expect(lines.some((l) => String(l["msg"]).startsWith("Setting `min_available_clients` lower than"))).toBe(true);
  });
});

describe("FedAvg aggregation rules", () => {
  it("returns nothing without results, or with failures when they are not accepted", () => {
    const strict = new FedAvg({ acceptFailures: false });
    expect(strict.aggregateFit(1, [], [])).toEqual([undefined, {}]);
    expect(strict.aggregateFit(1, [fitResult("a", [1], 1)], [new Error("x")])).toEqual([undefined, {}]);
    const [params] = new FedAvg().aggregateFit(1, [fitResult("a", [1], 1), fitResult("b", [3], 3)], [new Error("x")]);
    expect(vectorOf(params!)).toEqual([2.5]);
  });

  it("aggregates metrics with the given function, or warns once in round 1", () => {
    const { logger, lines } = memoryLogger();
    const s = new FedAvg({ logger });
    expect(s.aggregateFit(1, [fitResult("a", [1], 1)], [])[1]).toEqual({});
    s.aggregateFit(2, [fitResult("a", [1], 1)], []);
    expect(lines.filter((l) => l["msg"] === "No fit_metrics_aggregation_fn provided")).toHaveLength(1);
    const withFn = new FedAvg({ fitMetricsAggregationFn: (r) => ({ clients: BigInt(r.length), first: r[0]![0] }) });
    expect(withFn.aggregateFit(1, [fitResult("a", [1], 4), fitResult("b", [1], 6)], [])[1]).toEqual({
      clients: 2n,
      first: 4,
    });
  });
});

describe("FedProx and FedMedian", () => {
  it("FedProx adds proximal_mu (a double) to every fit config", async () => {
    const s = new FedProx({ proximalMu: 0.1, onFitConfigFn: () => ({ lr: 0.01 }) });
    const pairs = await s.configureFit(1, vectorParameters([1]), managerWith(2));
    for (const [, ins] of pairs) expect(ins.config).toEqual({ lr: 0.01, proximal_mu: 0.1 });
  });

  it("FedMedian aggregates with the element-wise median, ignoring num_examples", () => {
    const [params] = new FedMedian().aggregateFit(
      1,
      [fitResult("a", [1], 1000), fitResult("b", [5], 1), fitResult("c", [9], 1)],
      [],
    );
    expect(vectorOf(params!)).toEqual([5]);
    expect(String(new FedMedian())).toBe("FedMedian(accept_failures=True)");
  });
});

describe("SimpleClientManager", () => {
  it("wakes a waiter as soon as enough clients register", async () => {
    const m = new SimpleClientManager();
    const waiting = m.waitFor(2, 60_000);
    m.register(proxy("a"));
    expect(m.register(proxy("a"))).toBe(false);
    m.register(proxy("b"));
    await expect(waiting).resolves.toBe(true);
  });

  it("gives up after the wait timeout and samples nobody", async () => {
    const m = managerWith(1, { waitTimeoutMs: 30 });
    await expect(m.waitFor(2)).resolves.toBe(false);
    await expect(m.sample(2)).resolves.toEqual([]);
  });

  it("rejects a wait when its signal aborts", async () => {
    const controller = new AbortController();
    const m = new SimpleClientManager({ signal: controller.signal });
    const waiting = m.waitFor(1);
    controller.abort(new Error("aborted"));
    await expect(waiting).rejects.toThrow("aborted");
  });

  it("discovers nodes from GetNodes and drops nodes that went away", async () => {
    const driver = new FakeDriver();
    const m = new SimpleClientManager({ discover: driverNodeDiscovery(driver) });
    driver.addNode(5n, async () => "silent");
    driver.addNode(-(2n ** 63n), async () => "silent");
    await m.refresh();
    expect([...m.all().keys()].sort()).toEqual(["-9223372036854775808", "5"]);
    driver.killNode(5n);
    await m.refresh();
    expect([...m.all().keys()]).toEqual(["-9223372036854775808"]);
  });
});
