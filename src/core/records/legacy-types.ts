/**
 * The legacy (pre-Message) Flower types that NumPy-style clients and strategies use:
 * Parameters, FitIns/FitRes, EvaluateIns/EvaluateRes and friends. `compat.ts` maps them to
 * RecordSets with the exact key names Flower 1.10 uses.
 */
import type { ConfigsScalar } from "./types";

/** Flower `Scalar`: what legacy configs and metrics may hold. */
export type Scalar = ConfigsScalar;
export type Config = Record<string, Scalar>;
export type Metrics = Record<string, Scalar>;
export type Properties = Record<string, Scalar>;

/** Serialized tensors, each one .npy bytes when tensorType is "numpy.ndarray". */
export interface Parameters {
  tensors: Uint8Array[];
  tensorType: string;
}

export interface Status {
  code: number;
  message: string;
}

export interface GetParametersIns {
  config: Config;
}
export interface GetParametersRes {
  status: Status;
  parameters: Parameters;
}
export interface GetPropertiesIns {
  config: Config;
}
export interface GetPropertiesRes {
  status: Status;
  properties: Properties;
}
export interface FitIns {
  parameters: Parameters;
  config: Config;
}
export interface FitRes {
  status: Status;
  parameters: Parameters;
  numExamples: number;
  metrics: Metrics;
}
export interface EvaluateIns {
  parameters: Parameters;
  config: Config;
}
export interface EvaluateRes {
  status: Status;
  loss: number;
  numExamples: number;
  metrics: Metrics;
}
