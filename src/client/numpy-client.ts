/**
 * `NumPyClient`: the convenient client style where parameters are plain arrays (NDArrays)
 * instead of serialized `Parameters` (Flower's `flwr.client.NumPyClient`). Subclass it and
 * override the methods you support; `toClient()` wraps only the overridden ones, so the others
 * are answered with Flower's NOT_IMPLEMENTED statuses. Arrays travel as .npy bytes.
 */
import { StatusCode } from "../core/constants";
import { parametersToNdarrays, ndarraysToParameters } from "../core/records/parameters";
import type { Context, NDArrays } from "../core/records/types";
import type { Config, Metrics, Properties, Scalar } from "../core/records/legacy-types";
import type { Client } from "./client";

type MaybePromise<T> = T | Promise<T>;

/** What `fit` returns: updated arrays, number of training examples, metrics. */
export type FitResult = [parameters: NDArrays, numExamples: number, metrics: Metrics];
/** What `evaluate` returns: loss, number of evaluation examples, metrics. */
export type EvaluateResult = [loss: number, numExamples: number, metrics: Metrics];

const SUCCESS = { code: StatusCode.OK, message: "Success" };

// Flower's texts, so a Python user recognises the mistake.
const WRONG_FIT_RETURN =
  "NumPyClient.fit did not return a tuple with 3 elements.\n" +
  "The returned values should have the following type signature:\n" +
  "    [NDArrays, number (integer), Record<string, Scalar>]\n" +
  "Example\n-------\n    [model weights, 10, { accuracy: 0.95 }]";
const WRONG_EVALUATE_RETURN =
  "NumPyClient.evaluate did not return a tuple with 3 elements.\n" +
  "The returned values should have the following type signature:\n" +
  "    [number, number (integer), Record<string, Scalar>]\n" +
  "Example\n-------\n    [0.5, 10, { accuracy: 0.95 }]";

export abstract class NumPyClient {
  /** The run context of the message being handled; set before every call. */
  context?: Context;

  /** Properties of this client. Default: not implemented (status code 1). */
  getProperties(_config: Config): MaybePromise<Properties> {
    return {};
  }

  /** The current local model parameters. Default: not implemented (status code 2). */
  getParameters(_config: Config): MaybePromise<NDArrays> {
    return [];
  }

  /** Trains on local data. Default: not implemented (status code 3). */
  fit(_parameters: NDArrays, _config: Config): MaybePromise<FitResult> {
    return [[], 0, {}];
  }

  /** Evaluates on local data. Default: not implemented (status code 4). */
  evaluate(_parameters: NDArrays, _config: Config): MaybePromise<EvaluateResult> {
    return [0.0, 0, {}];
  }

  getContext(): Context | undefined {
    return this.context;
  }

  setContext(context: Context): void {
    this.context = context;
  }

  /**
   * A `Client` exposing exactly the methods this subclass overrides (Flower's
   * `to_client()`); the rest are answered NOT_IMPLEMENTED by the ClientApp.
   */
  toClient(): Client {
    const base = NumPyClient.prototype;
    const client: Client = { setContext: (context) => this.setContext(context) };
    if (this.getProperties !== base.getProperties) {
      client.getProperties = async (ins) => ({
        status: { ...SUCCESS },
        properties: await this.getProperties(ins.config),
      });
    }
    if (this.getParameters !== base.getParameters) {
      client.getParameters = async (ins) => ({
        status: { ...SUCCESS },
        parameters: ndarraysToParameters(await this.getParameters(ins.config)),
      });
    }
    if (this.fit !== base.fit) {
      client.fit = async (ins) => {
        const result: unknown = await this.fit(parametersToNdarrays(ins.parameters), ins.config);
        if (!isTriple(result) || !Array.isArray(result[0]) || !isCount(result[1]) || !isScalarRecord(result[2])) {
          throw new TypeError(WRONG_FIT_RETURN);
        }
        return {
          status: { ...SUCCESS },
          parameters: ndarraysToParameters(result[0] as NDArrays),
          numExamples: Number(result[1]),
          metrics: result[2],
        };
      };
    }
    if (this.evaluate !== base.evaluate) {
      client.evaluate = async (ins) => {
        const result: unknown = await this.evaluate(parametersToNdarrays(ins.parameters), ins.config);
        if (!isTriple(result) || typeof result[0] !== "number" || !isCount(result[1]) || !isScalarRecord(result[2])) {
          throw new TypeError(WRONG_EVALUATE_RETURN);
        }
        return { status: { ...SUCCESS }, loss: result[0], numExamples: Number(result[1]), metrics: result[2] };
      };
    }
    return client;
  }
}

/** Brand-free check used by the ClientApp: a NumPyClient from any copy of this package. */
export function isNumPyClient(value: unknown): value is NumPyClient {
  return (
    value instanceof NumPyClient ||
    (typeof value === "object" &&
      value !== null &&
      typeof (value as { toClient?: unknown }).toClient === "function" &&
      typeof (value as { setContext?: unknown }).setContext === "function" &&
      typeof (value as { getContext?: unknown }).getContext === "function")
  );
}

function isTriple(value: unknown): value is [unknown, unknown, unknown] {
  return Array.isArray(value) && value.length === 3;
}

/** An integer example count; a bigint that fits a double exactly is accepted too. */
function isCount(value: unknown): value is number | bigint {
  if (typeof value === "number") return Number.isSafeInteger(value);
  if (typeof value === "bigint") return Number.isSafeInteger(Number(value));
  return false;
}

function isScalarRecord(value: unknown): value is Record<string, Scalar> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}
