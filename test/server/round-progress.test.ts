/**
 * The legacy loop's per-round info line (serverapp.round-finished) and its record of rounds
 * without a successful fit result (History.roundsWithoutFitResults, behind exit code 3).
 */
import type { FitRes } from "../../src/core/records/legacy-types";
import { RecordSet, type Context } from "../../src/core/records/types";
import { FedAvg, ServerApp } from "../../src/server";
import { FakeDriver, legacyNode } from "./fake-driver";
import { memoryLogger, vectorParameters } from "./helpers";

const context = (): Context => ({ nodeId: 0n, nodeConfig: {}, state: new RecordSet(), runConfig: {} });
const ok = (weights: number[]): FitRes => ({
  status: { code: 0, message: "Success" },
  parameters: vectorParameters(weights),
  numExamples: 10,
  metrics: { train_loss: 0.25 },
});

test("one line per round with results, failures, losses and metrics; a round where every fit failed is recorded", async () => {
  const driver = new FakeDriver();
  let fits = 0;
  driver.addNode(
    1n,
    legacyNode({
      fit: () => {
        fits += 1;
        return fits === 1 ? { ...ok([1]), status: { code: 3, message: "disk full" } } : ok([1]);
      },
      evaluate: () => ({
        status: { code: 0, message: "Success" },
        loss: 0.123456,
        numExamples: 5,
        metrics: { accuracy: 0.9 },
      }),
    }),
  );
  const { logger, lines } = memoryLogger("info");
  const app = new ServerApp({
    config: { numRounds: 2 },
    strategy: new FedAvg({
      initialParameters: vectorParameters([0]),
      minFitClients: 1,
      minEvaluateClients: 1,
      minAvailableClients: 1,
      fitMetricsAggregationFn: (rs) => ({ train_loss: rs[0]![1]["train_loss"]! }),
      evaluateMetricsAggregationFn: (rs) => ({ accuracy: rs[0]![1]["accuracy"]! }),
    }),
  });
  const history = await app.run(driver, context(), { logger });

  expect(history.roundsWithoutFitResults).toEqual([1]);
  const rounds = lines.filter((l) => l["event"] === "serverapp.round-finished");
  expect(
    rounds.map((r) => [r["round"], r["fitResults"], r["fitFailures"], r["evalResults"], r["evalFailures"]]),
  ).toEqual([
    [1, 0, 1, 1, 0],
    [2, 1, 0, 1, 0],
  ]);
  expect(rounds[1]).toMatchObject({ level: 30, fitMetrics: { train_loss: 0.25 }, evalMetrics: { accuracy: 0.9 } });
  expect(rounds[1]!["evalLoss"]).toBeCloseTo(0.123456, 9); // weighted average of one result
  expect(String(rounds[1]!["msg"])).toMatch(
    /^Round 2\/2 done in \d+\.\d\d s: fit 1 results, 0 failures \(train_loss=0\.25\); evaluate 1 results, 0 failures, loss 0\.1235 \(accuracy=0\.9\)$/,
  );
  expect(typeof rounds[0]!["seconds"]).toBe("number");
  const warning = lines.find((l) => l["event"] === "serverapp.round-without-fit-results");
  expect(warning).toMatchObject({ level: 40, round: 1, failures: 1 });
});

test("a round with results is not counted even when the strategy refuses to aggregate (acceptFailures false)", async () => {
  const driver = new FakeDriver();
  driver.addNode(1n, legacyNode({ fit: () => ok([2]) }));
  driver.addNode(2n, async () => ({ code: 2, reason: "boom" }));
  const app = new ServerApp({
    config: { numRounds: 1 },
    strategy: new FedAvg({
      fractionEvaluate: 0,
      acceptFailures: false,
      minAvailableClients: 2,
      initialParameters: vectorParameters([0]),
    }),
  });
  const history = await app.run(driver, context());
  expect(history.roundsWithoutFitResults).toEqual([]);
});
