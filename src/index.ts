/**
 * flwr-ts, the public API (package.json `main`):
 *
 *   import { startServer, startClient, NumPyClient, FedAvg } from "flwr-ts";
 *
 * - writing apps: ClientApp / NumPyClient / Client (SuperNode side), ServerApp, strategies and
 *   History (ServerApp side), records helpers, typed errors;
 * - the legacy one-call API: startServer / startClient (docs/library-api.md);
 * - embedding the daemons: startSuperLink, startSuperNode, runServerApp.
 *
 * TensorFlow.js is deliberately not reachable from here: importing flwr-ts must not load it
 * (the example app imports src/example/tensorflow.ts itself).
 */

// Legacy one-call API.
export {
  DEFAULT_SERVER_ADDRESS,
  type ClientAuthKeys,
  type ClientReadyInfo,
  type ClientTransport,
  DEFAULT_CLIENT_TRANSPORT,
  type ServerReadyInfo,
  type StartClientOptions,
  type StartServerConfig,
  type StartServerOptions,
  startClient,
  startNumpyClient,
  startServer,
} from "./compat";

// Client side: what a SuperNode runs.
export { ClientApp, exceptionReason } from "./client/client-app";
export type { ClientAppOptions, ClientFn, HandleOptions, MessageHandler } from "./client/client-app";
export { NumPyClient, isNumPyClient } from "./client/numpy-client";
// Renamed: the strategy layer has its own FitResult / EvaluateResult ([ClientProxy, Res]).
export type { EvaluateResult as NumPyEvaluateResult, FitResult as NumPyFitResult } from "./client/numpy-client";
export type { Client } from "./client/client";

// Server side: ServerApp, the legacy loop, strategies.
export {
  ServerApp,
  type ServerAppComponents,
  type ServerAppMain,
  type ServerAppOptions,
  type ServerAppRunOptions,
  type ServerFn,
} from "./server/server-app";
export type { Driver, RunInfo, SendAndReceiveOptions } from "./server/driver";
export { History, type HistoryJson } from "./server/history";
export { Server, type ServerConfig, type FitOutcome, runFl } from "./server/round-loop";
export { type ClientManager, type Criterion, SimpleClientManager, driverNodeDiscovery } from "./server/client-manager";
export { type ClientCallOptions, type ClientProxy, ClientAppError, DriverClientProxy } from "./server/client-proxy";
export * from "./server/strategy";

// Records: RecordSet, Message, legacy types, ndarray helpers.
export { RecordSet } from "./core/records/types";
export type {
  ArrayRecordEntry,
  ConfigsRecord,
  ConfigsScalar,
  Context,
  Message,
  MessageError,
  Metadata,
  MetricsRecord,
  NDArray,
  NDArrays,
  ParametersRecord,
} from "./core/records/types";
export type * from "./core/records/legacy-types";
export { NUMPY_TENSOR_TYPE, ndarraysToParameters, parametersToNdarrays } from "./core/records/parameters";
export { ndarrayToNpy, npyToNdarray } from "./core/records/npy";
export { createReply } from "./core/records/serde";
export { ErrorCode, MessageType, StatusCode } from "./core/constants";

// Errors and logging.
export {
  AppLoadError,
  AuthenticationError,
  ConnectionError,
  FlwrError,
  InvalidConfigError,
  InvalidKeyFileError,
  MalformedMessageError,
  NotFoundError,
  RoundFailedError,
  StateError,
  TimeoutError,
  errorMessage,
} from "./core/errors";
export { type Logger, type LoggerOptions, createLogger, silentLogger } from "./core/logger";

// Embedding the daemons (they take key material; these read or parse it).
export { Allowlist } from "./auth/allowlist";
export { type KeyPair, loadKeyPairFiles, parseOpenSshPrivateKey, parsePublicKey } from "./auth/keys";
export {
  type SuperLinkAuthConfig,
  type SuperLinkConfig,
  type SuperLinkHandle,
  startSuperLink,
} from "./superlink/superlink";
export {
  type SuperNodeAuthKeys,
  type SuperNodeConfig,
  type SuperNodeHandle,
  startSuperNode,
} from "./supernode/supernode";
export { type RunServerAppConfig, type RunServerAppDeps, runServerApp } from "./serverapp/run-server-app";
export { GrpcDriver, type GrpcDriverConfig } from "./serverapp/grpc-driver";
