/**
 * `startClient` / `startNumpyClient`: the legacy one-call client of the older Flower guide
 * (Flower 1.10's `flwr.client.start_client` / `start_numpy_client`). It serves the given Client
 * or NumPyClient over one of Flower's transports and resolves when the server disconnects it:
 *
 *  - `transport: "grpc-bidi"` (the default, as Flower 1.10): one FlowerService.Join stream
 *    (grpc-bidi-client.ts), for Flower's `start_server` and ours;
 *  - `transport: "grpc-rere"`: a SuperNode on the Fleet API, for a SuperLink (ours or Flower's
 *    `flower-superlink`) and for our `startServer`; node authentication (`authKeys`) needs it;
 *  - `transport: "rest"`: Flower's REST Fleet API; not available in flwr-ts yet (clear error).
 *
 * When it ends:
 *  - the server finished: both Flower's start_server and ours disconnect every client after the
 *    last round (grpc-bidi ReconnectIns / grpc-rere `reconnect` with 0 seconds); the client
 *    answers, leaves (grpc-rere: DeleteNode) and startClient resolves. A grpc-bidi server that
 *    just ends the stream also makes it resolve, as Flower's client does;
 *  - `signal` aborts: the client stops (grpc-rere: finishing a message in hand, then DeleteNode)
 *    and startClient resolves; stopping on request is a normal end for a client;
 *  - a failure retrying cannot fix (untrusted certificate, refused key, wrong transport for the
 *    server, the client code threw on grpc-bidi, retry limits reached): startClient rejects with
 *    the typed error.
 * A server that simply goes away (e.g. a Python `flower-superlink`, whose ServerApp never sends
 * `reconnect`) is retried within `maxRetries` / `maxWaitTime`, unlimited by default as Flower.
 */
import { ClientApp } from "../client/client-app";
import type { Client } from "../client/client";
import { type NumPyClient, isNumPyClient } from "../client/numpy-client";
import * as grpc from "@grpc/grpc-js";
import { type KeyPair, assertKeyPair, parseOpenSshPrivateKey, parsePublicKey, readKeyTextFile } from "../auth/keys";
import { FlwrError, InvalidConfigError, InvalidKeyFileError } from "../core/errors";
import { type Logger, createLogger } from "../core/logger";
import { applyGrpcExtensionsOption } from "./grpc-extensions-option";
import type { ConfigsScalar } from "../core/records/types";
import { type SuperNodeHandle, startSuperNode } from "../supernode/supernode";
import { isServiceError } from "../transport/status";
import { runGrpcBidiClient } from "./grpc-bidi-client";

/** Flower 1.10's `transport=` values. */
export type ClientTransport = "grpc-bidi" | "grpc-rere" | "rest";
/** Flower 1.10's default transport of start_client. */
export const DEFAULT_CLIENT_TRANSPORT: ClientTransport = "grpc-bidi";
const TRANSPORTS: readonly ClientTransport[] = ["grpc-bidi", "grpc-rere", "rest"];

/** Node authentication keys: each a file path, or the key text itself (OpenSSH or PEM) as a string or Buffer. */
export interface ClientAuthKeys {
  /** The node's EC private key: path, or OpenSSH / PEM text. */
  privateKey: string | Uint8Array;
  /** Its public key: path, or an OpenSSH `.pub` line / PEM text. */
  publicKey: string | Uint8Array;
}

/** What `onReady` is told once the client is connected. */
export interface ClientReadyInfo {
  /** grpc-rere: the node id the server assigned; grpc-bidi: -1 (Flower's value: it has none). */
  nodeId: bigint;
}

export interface StartClientOptions {
  /** The client to serve (one instance answers every message, as Flower's `client=`). */
  client: Client | NumPyClient;
  /**
   * "grpc-bidi" (default, Flower 1.10's): FlowerService.Join, for a `start_server`;
   * "grpc-rere": the Fleet API, for a SuperLink or our startServer; "rest": not available yet.
   */
  transport?: ClientTransport;
  /** PEM CA bundle that signed the server's certificate. */
  rootCertificates?: Buffer;
  /** Plaintext. Default: true exactly when no `rootCertificates` are given (as Flower). */
  insecure?: boolean;
  /** Retries of a failing call before giving up. Default unlimited. */
  maxRetries?: number;
  /** Total time a failing call is retried before giving up, in seconds (as Flower). Default unlimited. */
  maxWaitTime?: number;
  /** Node authentication (needs TLS and `transport: "grpc-rere"`). */
  authKeys?: ClientAuthKeys;
  /** Handed to the client as `context.nodeConfig` (e.g. `partition-id`). Default {}. */
  nodeConfig?: Record<string, ConfigsScalar>;
  /** Default: a text logger on stderr (Flower logs to the console). */
  logger?: Logger;
  /**
   * Enable flwr-ts's grpc-js extensions (zero-copy sends, incremental decoder) in this process,
   * process-wide, and log that it did. Default true; false leaves grpc-js as it is (large
   * messages then cost extra copies). docs/grpc-extensions.md.
   */
  grpcExtensions?: boolean;
  /**
   * Aborting stops the client; startClient then resolves. It also works while the first
   * registration is still being retried (the server not up yet).
   */
  signal?: AbortSignal;
  /** Called once connected: grpc-rere after registration, grpc-bidi when the stream is open. */
  onReady?: (info: ClientReadyInfo) => void;
}

function isClientLike(value: unknown): value is Client | NumPyClient {
  if (isNumPyClient(value)) return true;
  if (typeof value !== "object" || value === null) return false;
  const methods = ["getParameters", "getProperties", "fit", "evaluate"] as const;
  return methods.some((m) => typeof (value as Record<string, unknown>)[m] === "function");
}

/** Key text rather than a path: PEM armour, an OpenSSH public key line, or several lines. */
function isKeyText(value: string): boolean {
  return value.includes("-----BEGIN") || /^\s*(ecdsa-sha2-|ssh-)/.test(value) || value.includes("\n");
}

/** The text of one key: bytes or text as given, or the file a path names; and how to name it. */
function keyText(value: unknown, what: "privateKey" | "publicKey"): { text: string; source: string; path?: string } {
  if (value instanceof Uint8Array) return { text: Buffer.from(value).toString("utf8"), source: `authKeys.${what}` };
  if (typeof value !== "string") {
    throw new InvalidKeyFileError(
      `startClient: \`authKeys.${what}\` must be a string (path or key text) or a Buffer (key text)`,
    );
  }
  if (isKeyText(value)) return { text: value, source: `authKeys.${what}` };
  return {
    text: readKeyTextFile(value, what === "privateKey" ? "private key file" : "public key file"),
    source: value,
    path: value,
  };
}

/** Parses the node's key pair in memory (nothing is written to disk). Throws InvalidKeyFileError. */
function authKeyPair(keys: ClientAuthKeys): KeyPair {
  const priv = keyText(keys.privateKey, "privateKey");
  const pub = keyText(keys.publicKey, "publicKey");
  const privateKey = parseOpenSshPrivateKey(priv.text, priv.source);
  const publicKeyPem = parsePublicKey(pub.text, pub.source);
  assertKeyPair(privateKey, publicKeyPem, { privatePath: priv.source, publicPath: pub.source });
  return { privateKey, publicKeyPem };
}

/**
 * Connects to `serverAddress` (HOST:PORT of startServer, Flower's start_server, or with
 * grpc-rere a SuperLink's Fleet API) and serves `options.client` until the server disconnects
 * it or `signal` aborts (resolves). Rejects with InvalidConfigError (options, untrusted
 * certificate, wrong transport for the server), InvalidKeyFileError (keys), AuthenticationError
 * (refused key), ConnectionError (retry limits reached), or what the client threw (grpc-bidi).
 */
export async function startClient(serverAddress: string, options: StartClientOptions): Promise<void> {
  if (options === undefined || !isClientLike(options.client)) {
    throw new InvalidConfigError(
      "startClient: `client` must be a NumPyClient or a Client (an object with getParameters/fit/evaluate methods)",
    );
  }
  const { client, rootCertificates, signal } = options;
  const transport = options.transport ?? DEFAULT_CLIENT_TRANSPORT;
  if (!TRANSPORTS.includes(transport)) {
    throw new InvalidConfigError(
      `startClient: unknown transport ${JSON.stringify(transport)} (possible: ${TRANSPORTS.join(", ")})`,
    );
  }
  if (rootCertificates !== undefined && !(rootCertificates instanceof Uint8Array)) {
    throw new InvalidConfigError("startClient: `rootCertificates` must be a Buffer with the PEM CA certificate(s)");
  }
  if (options.insecure === true && rootCertificates !== undefined) {
    throw new InvalidConfigError("startClient: `insecure: true` and `rootCertificates` cannot be used together");
  }
  const insecure = options.insecure ?? rootCertificates === undefined;
  if (options.maxWaitTime !== undefined && !(Number.isFinite(options.maxWaitTime) && options.maxWaitTime >= 0)) {
    throw new InvalidConfigError(
      `startClient: \`maxWaitTime\` must be a non-negative number of seconds, got ${options.maxWaitTime}`,
    );
  }
  if (transport === "rest") {
    // Hook for Flower's REST transport: route to a REST SuperNode here once flwr-ts has one.
    throw new InvalidConfigError(
      'startClient: transport "rest" (Flower\'s REST Fleet API) is not available in flwr-ts; ' +
        'use "grpc-bidi" (Flower\'s start_server, our startServer) or "grpc-rere" (a SuperLink, our startServer)',
    );
  }
  if (transport === "grpc-bidi" && options.authKeys !== undefined) {
    // Flower logs "Client authentication is not supported for this transport type." and goes on
    // without; refusing is safer than silently connecting unauthenticated.
    throw new InvalidConfigError(
      'startClient: `authKeys` needs transport "grpc-rere"; grpc-bidi has no node authentication',
    );
  }
  if (signal?.aborted) return;
  const logger = options.logger ?? createLogger({ format: "text", base: { component: "flwr" } });
  applyGrpcExtensionsOption(options.grpcExtensions, "startClient", logger);
  const app = new ClientApp({ clientFn: () => client });

  if (transport === "grpc-bidi") {
    await runGrpcBidiClient({
      serverAddress,
      ...(rootCertificates !== undefined ? { rootCertificates: Buffer.from(rootCertificates) } : {}),
      insecure,
      app,
      ...(options.nodeConfig !== undefined ? { nodeConfig: options.nodeConfig } : {}),
      ...(options.maxRetries !== undefined ? { maxRetries: options.maxRetries } : {}),
      ...(options.maxWaitTime !== undefined ? { maxWaitTimeMs: options.maxWaitTime * 1000 } : {}),
      logger,
      ...(signal !== undefined ? { signal } : {}),
      onConnected: () => options.onReady?.({ nodeId: -1n }),
    });
    logger.info({ event: "client.finished" }, "Client finished");
    return;
  }

  if (insecure && options.authKeys !== undefined) {
    throw new InvalidConfigError(
      "startClient: `authKeys` need a TLS connection: pass `rootCertificates` (and not `insecure: true`)",
    );
  }
  const auth = options.authKeys !== undefined ? authKeyPair(options.authKeys) : undefined;
  let node: SuperNodeHandle;
  try {
    node = await startSuperNode(
      {
        superlink: serverAddress,
        ...(rootCertificates !== undefined ? { rootCertificates: Buffer.from(rootCertificates) } : {}),
        ...(insecure ? { insecure: true } : {}),
        ...(auth !== undefined ? { auth } : {}),
        app,
        ...(options.nodeConfig !== undefined ? { nodeConfig: options.nodeConfig } : {}),
        ...(options.maxRetries !== undefined ? { maxRetries: options.maxRetries } : {}),
        ...(options.maxWaitTime !== undefined ? { maxWaitTimeMs: options.maxWaitTime * 1000 } : {}),
      },
      { logger, ...(signal !== undefined ? { signal } : {}) },
    );
  } catch (err) {
    // Aborted while still connecting: stopping is what the caller asked for, not a failure.
    if (signal?.aborted) return;
    throw withLibraryHint(err, serverAddress);
  }

  const stop = (): void => {
    logger.info({ event: "client.stopping" }, "Stopping the client (abort requested)");
    void node.close();
  };
  signal?.addEventListener("abort", stop, { once: true });
  try {
    if (signal?.aborted) stop();
    else options.onReady?.({ nodeId: node.nodeId });
    await node.done;
    logger.info({ event: "client.finished" }, "Client finished");
  } finally {
    signal?.removeEventListener("abort", stop);
    await node.close();
  }
}

/** Flower 1.10's deprecated `start_numpy_client`: startClient with a NumPyClient. */
export async function startNumpyClient(
  serverAddress: string,
  options: StartClientOptions & { client: NumPyClient },
): Promise<void> {
  if (options === undefined || !isNumPyClient(options.client)) {
    throw new InvalidConfigError("startNumpyClient: `client` must be a NumPyClient");
  }
  return startClient(serverAddress, options);
}

/**
 * The SuperNode explains UNIMPLEMENTED for its command line ("Is --superlink ..."); called
 * from the library, the likely cause is a grpc-bidi-only server such as Flower's start_server.
 */
function withLibraryHint(err: unknown, serverAddress: string): unknown {
  if (!FlwrError.isFlwrError(err) || err.code !== "FLWR_INVALID_CONFIG") return err;
  const cause = err.cause;
  if (!isServiceError(cause) || cause.code !== grpc.status.UNIMPLEMENTED) return err;
  return new InvalidConfigError(
    `The server at ${serverAddress} does not implement the grpc-rere Fleet API (${cause.details || "UNIMPLEMENTED"}). ` +
      'Flower\'s start_server serves only grpc-bidi: use `transport: "grpc-bidi"` (the default).',
    { cause },
  );
}
