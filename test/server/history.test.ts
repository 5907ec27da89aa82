/**
 * History text against Flower 1.10's own History class (fixtures/history-python.json, made by
 * running flwr/server/history.py from the v1.10.0 tag) and a sample of its output.
 */
import { History } from "../../src/server/history";
import vectors from "./fixtures/history-python.json";

describe("History.toString", () => {
  it("reproduces the sample output of Flower 1.10 (fit metrics only)", () => {
    const h = new History();
    for (const round of [1, 2]) {
      h.addMetricsDistributedFit(round, { train_loss: 0.5, train_accuracy: 0.25, val_loss: 1.0, val_accuracy: 0.125 });
    }
    expect(h.toString()).toBe(
      "History (metrics, distributed, fit):\n" +
        "{'train_accuracy': [(1, 0.25), (2, 0.25)],\n" +
        " 'train_loss': [(1, 0.5), (2, 0.5)],\n" +
        " 'val_accuracy': [(1, 0.125), (2, 0.125)],\n" +
        " 'val_loss': [(1, 1.0), (2, 1.0)]}\n",
    );
    expect(h.toString()).toBe(vectors.fit_only);
  });

  it("reproduces every section, in Flower's order, like Flower", () => {
    const h = new History();
    h.addLossCentralized(0, 2.302585092994046);
    h.addMetricsCentralized(0, { accuracy: 0.1 });
    for (const r of [1, 2, 3]) {
      h.addMetricsDistributedFit(r, { train_loss: 1.0 / (r + 2) });
      h.addLossCentralized(r, 2.0 / r);
      h.addMetricsCentralized(r, { accuracy: 0.1 * r });
      h.addLossDistributed(r, 1e-5 * r);
      h.addMetricsDistributed(r, { accuracy: 0.3 + r / 100, count: BigInt(10 * r) });
    }
    expect(h.toString()).toBe(vectors.all_sections);
    // Like Flower, the centralized-metrics section is the only one without a final newline.
    expect(h.toString().endsWith("]}")).toBe(true);
  });

  it("is empty for an empty history", () => {
    const h = new History();
    expect(h.isEmpty).toBe(true);
    expect(h.toString()).toBe("");
  });
});

describe("History.toJSON", () => {
  it("keeps rounds and values, making bigint and bytes JSON-safe", () => {
    const h = new History();
    h.addLossDistributed(1, 0.5);
    h.addMetricsDistributedFit(1, { n: 3n, big: 2n ** 60n, ok: true, name: "x", raw: Uint8Array.from([1, 2]) });
    const json = JSON.parse(JSON.stringify(h)) as ReturnType<History["toJSON"]>;
    expect(json.lossesDistributed).toEqual([[1, 0.5]]);
    expect(json.lossesCentralized).toEqual([]);
    expect(json.metricsDistributedFit).toEqual({
      n: [[1, 3]],
      big: [[1, "1152921504606846976"]],
      ok: [[1, true]],
      name: [[1, "x"]],
      raw: [[1, "AQI="]],
    });
  });
});
