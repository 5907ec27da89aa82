/**
 * The bundled example ClientApp (`client:app` at the repository root): trains the small CNN of
 * `model.ts` on this node's partition of CIFAR-10-shaped data.
 *
 * Node config (`--node-config`), as in Flower's examples:
 * - `partition-id`, `num-partitions`: which IID slice this node trains on (default 0 of 1);
 * - `cifar-dir`: a directory holding CIFAR-10's binary version (`data_batch_1.bin` …); without
 *   it the offline synthetic stand-in is used and the logs and metrics say so;
 * - `train-count`, `test-count`: images per node (defaults 400 / 200, sized for pure-JS tf.js).
 *
 * Fit config from the ServerApp: `server_round` (seeds the shuffle), optional `local_epochs`.
 */
import { ClientApp } from "../client/client-app";
import { NumPyClient, type EvaluateResult as FitEvaluateResult, type FitResult } from "../client/numpy-client";
import { InvalidConfigError } from "../core/errors";
import type { Config } from "../core/records/legacy-types";
import type { ConfigsScalar, Context, NDArrays } from "../core/records/types";
import {
  DEFAULT_TEST_COUNT,
  DEFAULT_TRAIN_COUNT,
  DEFAULT_TRAIN_OPTIONS,
  createModel,
  evaluate,
  getWeights,
  loadDataset,
  loadTensorFlow,
  useFastestBackend,
  setWeights,
  train,
  type NodeDataset,
} from "./task";

/** Every node builds the same initial model, so any node can answer get_parameters. */
const MODEL_SEED = 0;

interface NodeData {
  key: string;
  data: NodeDataset;
}

// Loading (or generating) the data takes a while; do it once per process, not per message.
let cached: NodeData | undefined;

function integerSetting(config: Record<string, ConfigsScalar>, key: string, fallback: number): number {
  const value = config[key];
  if (value === undefined) return fallback;
  const n = typeof value === "bigint" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n)) {
    throw new InvalidConfigError(`node config "${key}" must be an integer, got ${String(value)}`);
  }
  return n;
}

function stringSetting(config: Record<string, ConfigsScalar>, key: string): string | undefined {
  const value = config[key];
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value === "")
    throw new InvalidConfigError(`node config "${key}" must be a non-empty string`);
  return value;
}

/** This node's data, from its node config; cached for the life of the process. */
export function nodeData(context: Context): NodeDataset {
  const config = context.nodeConfig;
  const options = {
    partitionId: integerSetting(config, "partition-id", 0),
    numPartitions: integerSetting(config, "num-partitions", 1),
    trainCount: integerSetting(config, "train-count", DEFAULT_TRAIN_COUNT),
    testCount: integerSetting(config, "test-count", DEFAULT_TEST_COUNT),
    cifarDir: stringSetting(config, "cifar-dir"),
  };
  const key = JSON.stringify(options);
  if (cached?.key !== key) cached = { key, data: loadDataset(options) };
  return cached.data;
}

function configNumber(config: Config, key: string, fallback: number): number {
  const value = config[key];
  if (typeof value === "bigint") return Number(value);
  if (typeof value === "number") return value;
  return fallback;
}

export class CifarClient extends NumPyClient {
  constructor(private readonly data: NodeDataset) {
    super();
  }

  private model() {
    return createModel(loadTensorFlow().tf, MODEL_SEED);
  }

  override getParameters(): NDArrays {
    const model = this.model();
    try {
      return getWeights(model);
    } finally {
      model.dispose();
    }
  }

  override async fit(parameters: NDArrays, config: Config): Promise<FitResult> {
    await useFastestBackend();
    const model = this.model();
    try {
      setWeights(model, parameters);
      const round = configNumber(config, "server_round", 0);
      const epochs = configNumber(config, "local_epochs", DEFAULT_TRAIN_OPTIONS.epochs);
      const result = await train(model, this.data.train, { ...DEFAULT_TRAIN_OPTIONS, epochs, shuffleSeed: round });
      return [getWeights(model), this.data.train.count, { train_loss: result.loss, train_accuracy: result.accuracy }];
    } finally {
      model.dispose();
    }
  }

  override async evaluate(parameters: NDArrays): Promise<FitEvaluateResult> {
    await useFastestBackend();
    const model = this.model();
    try {
      setWeights(model, parameters);
      const result = await evaluate(model, this.data.test);
      return [result.loss, this.data.test.count, { accuracy: result.accuracy }];
    } finally {
      model.dispose();
    }
  }
}

export const app = new ClientApp({ clientFn: (context) => new CifarClient(nodeData(context)) });
