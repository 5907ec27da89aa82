/**
 * Training and evaluation history of a legacy (strategy) run, as Flower's `History`:
 * losses per round and metrics per name per round. `toString()` reproduces Flower 1.10's text
 * exactly (docs/protocol.md, "Strategy loop and History"); `toJSON()` is the machine-readable form behind `--history-json`.
 */
import type { Metrics, Scalar } from "../core/records/legacy-types";
import { PyTuple, type PyValue, pformat, pyFloatRepr } from "./python-repr";

/** (round, value) pairs per metric name, in the order the rounds happened. */
export type MetricsHistory = Map<string, Array<[number, Scalar]>>;

/** JSON form of a scalar: bigint as a number when exact, else a decimal string; bytes as base64. */
type JsonScalar = number | string | boolean;

export interface HistoryJson {
  lossesDistributed: Array<[number, number]>;
  lossesCentralized: Array<[number, number]>;
  metricsDistributedFit: Record<string, Array<[number, JsonScalar]>>;
  metricsDistributed: Record<string, Array<[number, JsonScalar]>>;
  metricsCentralized: Record<string, Array<[number, JsonScalar]>>;
}

export class History {
  /** Aggregated loss of federated evaluation, per round. */
  readonly lossesDistributed: Array<[number, number]> = [];
  /** Loss of the strategy's server-side `evaluate`, per round (round 0 = initial parameters). */
  readonly lossesCentralized: Array<[number, number]> = [];
  /** Aggregated fit metrics (fitMetricsAggregationFn). */
  readonly metricsDistributedFit: MetricsHistory = new Map();
  /** Aggregated federated-evaluation metrics (evaluateMetricsAggregationFn). */
  readonly metricsDistributed: MetricsHistory = new Map();
  /** Metrics of the strategy's server-side `evaluate`. */
  readonly metricsCentralized: MetricsHistory = new Map();
  /** Rounds in which no fit succeeded (none selected, or every fit failed); not part of Flower's History. */
  readonly roundsWithoutFitResults: number[] = [];

  addLossDistributed(round: number, loss: number): void {
    this.lossesDistributed.push([round, loss]);
  }

  addLossCentralized(round: number, loss: number): void {
    this.lossesCentralized.push([round, loss]);
  }

  addMetricsDistributedFit(round: number, metrics: Metrics): void {
    addMetrics(this.metricsDistributedFit, round, metrics);
  }

  addMetricsDistributed(round: number, metrics: Metrics): void {
    addMetrics(this.metricsDistributed, round, metrics);
  }

  addMetricsCentralized(round: number, metrics: Metrics): void {
    addMetrics(this.metricsCentralized, round, metrics);
  }

  /** True when nothing was recorded (toString() is then ""). */
  get isEmpty(): boolean {
    return (
      this.lossesDistributed.length === 0 &&
      this.lossesCentralized.length === 0 &&
      this.metricsDistributedFit.size === 0 &&
      this.metricsDistributed.size === 0 &&
      this.metricsCentralized.size === 0
    );
  }

  /**
   * Flower's `History.__repr__`: only non-empty sections, in Flower's order; losses as
   * `\tround R: <float>` lines, metrics as `pprint.pformat` of a name-sorted dict of lists of
   * (round, value) tuples. Like Flower, the centralized-metrics section has no final newline.
   */
  toString(): string {
    let rep = "";
    if (this.lossesDistributed.length > 0) {
      rep += "History (loss, distributed):\n" + lossLines(this.lossesDistributed);
    }
    if (this.lossesCentralized.length > 0) {
      rep += "History (loss, centralized):\n" + lossLines(this.lossesCentralized);
    }
    if (this.metricsDistributedFit.size > 0) {
      rep += "History (metrics, distributed, fit):\n" + pformat(metricsToPy(this.metricsDistributedFit)) + "\n";
    }
    if (this.metricsDistributed.size > 0) {
      rep += "History (metrics, distributed, evaluate):\n" + pformat(metricsToPy(this.metricsDistributed)) + "\n";
    }
    if (this.metricsCentralized.size > 0) {
      rep += "History (metrics, centralized):\n" + pformat(metricsToPy(this.metricsCentralized));
    }
    return rep;
  }

  /** Plain JSON-safe copy (see JsonScalar for how non-JSON scalars are written). */
  toJSON(): HistoryJson {
    return {
      lossesDistributed: this.lossesDistributed.map(([r, l]) => [r, l]),
      lossesCentralized: this.lossesCentralized.map(([r, l]) => [r, l]),
      metricsDistributedFit: metricsToJson(this.metricsDistributedFit),
      metricsDistributed: metricsToJson(this.metricsDistributed),
      metricsCentralized: metricsToJson(this.metricsCentralized),
    };
  }
}

function addMetrics(target: MetricsHistory, round: number, metrics: Metrics): void {
  for (const [key, value] of Object.entries(metrics)) {
    let series = target.get(key);
    if (series === undefined) {
      series = [];
      target.set(key, series);
    }
    series.push([round, value]);
  }
}

function lossLines(losses: Array<[number, number]>): string {
  return losses.map(([round, loss]) => `\tround ${round}: ${pyFloatRepr(loss)}\n`).join("");
}

function metricsToPy(metrics: MetricsHistory): Map<string, PyValue> {
  const dict = new Map<string, PyValue>();
  for (const [key, series] of metrics) {
    dict.set(
      key,
      // Rounds are Python ints; a Scalar maps onto the matching Python type (see python-repr.ts).
      series.map(([round, value]) => new PyTuple([BigInt(round), value])),
    );
  }
  return dict;
}

function scalarToJson(value: Scalar): JsonScalar {
  if (typeof value === "bigint") {
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(value)
      : value.toString();
  }
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  return value;
}

function metricsToJson(metrics: MetricsHistory): Record<string, Array<[number, JsonScalar]>> {
  const out: Record<string, Array<[number, JsonScalar]>> = {};
  for (const [key, series] of metrics) out[key] = series.map(([round, value]) => [round, scalarToJson(value)]);
  return out;
}
