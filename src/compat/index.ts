/** The legacy one-call API of the older Flower guide: startServer / startClient. */
export {
  DEFAULT_SERVER_ADDRESS,
  type ServerReadyInfo,
  type StartServerConfig,
  type StartServerOptions,
  startServer,
} from "./start-server";
export { type ClientAuthKeys, type ClientReadyInfo, type StartClientOptions, startClient } from "./start-client";
export { InProcessDriver, type InProcessDriverOptions } from "./in-process-driver";
