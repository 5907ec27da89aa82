/**
 * The legacy `Client` contract (Flower's `flwr.client.Client`): four optional methods over the
 * legacy types. A method a client does not implement is answered with Flower's
 * *_NOT_IMPLEMENTED status, exactly as Flower's `maybe_call_*` helpers do (docs/protocol.md, "Legacy records").
 */
import { StatusCode } from "../core/constants";
import type { Context } from "../core/records/types";
import type {
  EvaluateIns,
  EvaluateRes,
  FitIns,
  FitRes,
  GetParametersIns,
  GetParametersRes,
  GetPropertiesIns,
  GetPropertiesRes,
} from "../core/records/legacy-types";

type MaybePromise<T> = T | Promise<T>;

/**
 * A federated-learning client in the legacy style. Every method is optional; the ClientApp
 * answers a missing one with the matching NOT_IMPLEMENTED status instead of failing.
 */
export interface Client {
  getParameters?(ins: GetParametersIns): MaybePromise<GetParametersRes>;
  getProperties?(ins: GetPropertiesIns): MaybePromise<GetPropertiesRes>;
  fit?(ins: FitIns): MaybePromise<FitRes>;
  evaluate?(ins: EvaluateIns): MaybePromise<EvaluateRes>;
  /** Called with the run context before each message is handled (Flower's `set_context`). */
  setContext?(context: Context): void;
}

/** Flower's answer for a client without `get_parameters`: status code 2 and no tensors. */
export function getParametersNotImplemented(): GetParametersRes {
  return {
    status: {
      code: StatusCode.GET_PARAMETERS_NOT_IMPLEMENTED,
      message: "Client does not implement `get_parameters`",
    },
    parameters: { tensors: [], tensorType: "" },
  };
}

/** Flower's answer for a client without `get_properties`: status code 1 and no properties. */
export function getPropertiesNotImplemented(): GetPropertiesRes {
  return {
    status: {
      code: StatusCode.GET_PROPERTIES_NOT_IMPLEMENTED,
      message: "Client does not implement `get_properties`",
    },
    properties: {},
  };
}

/** Flower's answer for a client without `fit`: status code 3, no tensors, 0 examples. */
export function fitNotImplemented(): FitRes {
  return {
    status: { code: StatusCode.FIT_NOT_IMPLEMENTED, message: "Client does not implement `fit`" },
    parameters: { tensors: [], tensorType: "" },
    numExamples: 0,
    metrics: {},
  };
}

/** Flower's answer for a client without `evaluate`: status code 4, loss 0, 0 examples. */
export function evaluateNotImplemented(): EvaluateRes {
  return {
    status: { code: StatusCode.EVALUATE_NOT_IMPLEMENTED, message: "Client does not implement `evaluate`" },
    loss: 0.0,
    numExamples: 0,
    metrics: {},
  };
}

/** Calls `client.getParameters`, or answers NOT_IMPLEMENTED when it is missing. */
export async function maybeCallGetParameters(client: Client, ins: GetParametersIns): Promise<GetParametersRes> {
  return client.getParameters ? client.getParameters(ins) : getParametersNotImplemented();
}

/** Calls `client.getProperties`, or answers NOT_IMPLEMENTED when it is missing. */
export async function maybeCallGetProperties(client: Client, ins: GetPropertiesIns): Promise<GetPropertiesRes> {
  return client.getProperties ? client.getProperties(ins) : getPropertiesNotImplemented();
}

/** Calls `client.fit`, or answers NOT_IMPLEMENTED when it is missing. */
export async function maybeCallFit(client: Client, ins: FitIns): Promise<FitRes> {
  return client.fit ? client.fit(ins) : fitNotImplemented();
}

/** Calls `client.evaluate`, or answers NOT_IMPLEMENTED when it is missing. */
export async function maybeCallEvaluate(client: Client, ins: EvaluateIns): Promise<EvaluateRes> {
  return client.evaluate ? client.evaluate(ins) : evaluateNotImplemented();
}
