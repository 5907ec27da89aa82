/**
 * The ServerApp API, for user apps loaded by `flower-server-app`:
 *   import { ServerApp, FedAvg } from "flwr-ts/dist/server";
 *   export const app = new ServerApp({ config: { numRounds: 3 }, strategy: new FedAvg({...}) });
 */
export {
  ServerApp,
  type ServerAppComponents,
  type ServerAppLike,
  type ServerAppMain,
  type ServerAppOptions,
  type ServerAppRunOptions,
  type ServerFn,
} from "./server-app";
export { type Driver, type RunInfo, type SendAndReceiveOptions } from "./driver";
export { History, type HistoryJson } from "./history";
export {
  Server,
  type ServerConfig,
  type FitOutcome,
  describeServerConfig,
  resolveServerConfig,
  runFl,
  summaryLines,
} from "./round-loop";
export { type ClientManager, type Criterion, SimpleClientManager, driverNodeDiscovery } from "./client-manager";
export { type ClientCallOptions, type ClientProxy, ClientAppError, DriverClientProxy } from "./client-proxy";
export * from "./strategy";
