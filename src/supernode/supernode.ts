/**
 * The SuperNode for Node: `startSuperNode(config, deps)` opens the connection `config` names
 * (grpc-rere over grpc-js, or REST over node:https) with node authentication from key files, and
 * runs the platform-neutral loop of supernode-core.ts on it. Signals, argv and exit codes belong
 * to src/cli/flower-client-app.ts.
 */
import type * as grpc from "@grpc/grpc-js";
import { SuperNodeAuth } from "../auth/client-auth";
import type { KeyPair } from "../auth/keys";
import { InvalidConfigError } from "../core/errors";
import type { Logger } from "../core/logger";
import { activeGrpcExtensions } from "../transport/grpc-extensions";
import { DEFAULT_MAX_BACKOFF_MS } from "../transport/retry";
import { FleetConnection } from "./fleet-connection";
import type { FleetTransport } from "./fleet-transport";
import { createNodeRestPoster } from "./node-rest-poster";
import { RestFleetConnection } from "./rest-connection";
import { type SuperNodeCoreConfig, type SuperNodeDeps, type SuperNodeHandle, startSuperNodeOn } from "./supernode-core";

export { DEFAULT_POLL_INTERVAL_MS } from "./supernode-core";
export type { SuperNodeDeps, SuperNodeHandle } from "./supernode-core";

/**
 * The node's key pair for node authentication (docs/protocol.md, "Node authentication"), read
 * by the caller: loadKeyPairFiles for key files, or parsed keys. The halves must match.
 */
export type SuperNodeAuthKeys = KeyPair;

export interface SuperNodeConfig extends SuperNodeCoreConfig {
  /** HOST:PORT of the SuperLink's Fleet API; with `transport: "rest"`, its http(s):// URL. */
  superlink: string;
  /** "grpc-rere" (default) or "rest" (Flower's REST Fleet API; https:// or http:// in `superlink`). */
  transport?: "grpc-rere" | "rest";
  /** CA bundle (PEM) that signed the SuperLink's certificate; default: system roots. */
  rootCertificates?: Buffer;
  /** Plaintext connection (only with --insecure); excludes `rootCertificates` and `auth`. */
  insecure?: boolean;
  /** Node authentication: the node's key pair. */
  auth?: SuperNodeAuthKeys;
  /** Extra grpc-js channel options. */
  channelOptions?: grpc.ChannelOptions;
}

/** Starts a SuperNode; resolves once it is registered. Rejects with a typed error otherwise. */
export async function startSuperNode(config: SuperNodeConfig, deps: SuperNodeDeps): Promise<SuperNodeHandle> {
  if (config.insecure && config.auth !== undefined) {
    throw new InvalidConfigError(
      "Node authentication requires a secure (TLS) connection: drop --insecure or the --auth-supernode-* keys",
    );
  }
  // Throws InvalidKeyFileError for a mismatched pair.
  const auth =
    config.auth !== undefined ? new SuperNodeAuth(config.auth.privateKey, config.auth.publicKeyPem) : undefined;
  const connection: FleetTransport =
    config.transport === "rest"
      ? new RestFleetConnection({
          baseUrl: config.superlink,
          poster: createNodeRestPoster(
            config.rootCertificates !== undefined ? { rootCertificates: config.rootCertificates } : {},
          ),
          ...(auth !== undefined ? { auth } : {}),
          logger: deps.logger,
        })
      : grpcConnection(config, auth, deps.logger);
  return startSuperNodeOn(connection, config, { grpcExtensions: activeGrpcExtensions, ...deps });
}

/** The grpc-rere connection, with the channel's reconnect backoff kept in step with ours. */
function grpcConnection(config: SuperNodeConfig, auth: SuperNodeAuth | undefined, logger: Logger): FleetConnection {
  return new FleetConnection({
    superlink: config.superlink,
    ...(config.rootCertificates !== undefined ? { rootCertificates: config.rootCertificates } : {}),
    ...(config.insecure !== undefined ? { insecure: config.insecure } : {}),
    ...(auth !== undefined ? { auth } : {}),
    channelOptions: {
      // grpc-js retries the connection on its own backoff (up to 120 s by default); keep it in
      // step with ours so a SuperLink that comes back is seen within one backoff ceiling.
      "grpc.initial_reconnect_backoff_ms": Math.min(1_000, config.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS),
      "grpc.max_reconnect_backoff_ms": config.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS,
      ...config.channelOptions,
    },
    logger: logger,
  });
}
