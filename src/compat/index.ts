/** The legacy one-call API of the older Flower guide: startServer / startClient / startNumpyClient. */
export {
  DEFAULT_SERVER_ADDRESS,
  type ServerReadyInfo,
  type StartServerConfig,
  type StartServerOptions,
  startServer,
} from "./start-server";
export {
  type ClientAuthKeys,
  type ClientReadyInfo,
  type ClientTransport,
  DEFAULT_CLIENT_TRANSPORT,
  type StartClientOptions,
  startClient,
  startNumpyClient,
} from "./start-client";
