/**
 * The ClientApp API: what a user module imports to write the app a SuperNode runs.
 * `export const app = new ClientApp({ clientFn })` (legacy) or `new ClientApp().train(fn)`.
 */
export { ClientApp, exceptionReason } from "./client-app";
export type { ClientAppOptions, ClientFn, HandleOptions, MessageHandler } from "./client-app";
export { NumPyClient, isNumPyClient } from "./numpy-client";
export type { EvaluateResult, FitResult } from "./numpy-client";
export {
  evaluateNotImplemented,
  fitNotImplemented,
  getParametersNotImplemented,
  getPropertiesNotImplemented,
  maybeCallEvaluate,
  maybeCallFit,
  maybeCallGetParameters,
  maybeCallGetProperties,
} from "./client";
export type { Client } from "./client";

// What handlers need most often, so a ClientApp module can import everything from one place.
export { createReply } from "../core/records/serde";
export { ndarraysToParameters, parametersToNdarrays } from "../core/records/parameters";
export { RecordSet } from "../core/records/types";
export type {
  ConfigsRecord,
  Context,
  Message,
  MessageError,
  Metadata,
  MetricsRecord,
  NDArray,
  NDArrays,
  ParametersRecord,
} from "../core/records/types";
export type * from "../core/records/legacy-types";
export { ErrorCode, MessageType } from "../core/constants";
