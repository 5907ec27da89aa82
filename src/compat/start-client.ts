/**
 * `startClient`: the legacy one-call client of the older Flower guide (Flower 1.10's
 * `flwr.client.start_client`). It runs a SuperNode (grpc-rere) whose ClientApp serves the given
 * Client / NumPyClient, and resolves when the node stops.
 *
 * When it ends:
 *  - the server finished: `startServer` sends every node a `reconnect` message with 0 seconds
 *    after its last round (as Flower's start_server disconnects its clients), the node answers,
 *    unregisters, and startClient resolves;
 *  - `signal` aborts: the node stops (finishing a message in hand, then DeleteNode) and
 *    startClient resolves — stopping on request is a normal end for a client;
 *  - a failure retrying cannot fix (untrusted certificate, refused key, retry limits reached):
 *    startClient rejects with the typed error.
 * A SuperLink that simply goes away (e.g. a Python `flower-superlink`, whose ServerApp never
 * sends `reconnect`) is retried within `maxRetries` / `maxWaitTime` — unlimited by default,
 * as Flower.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClientApp } from "../client/client-app";
import type { Client } from "../client/client";
import { type NumPyClient, isNumPyClient } from "../client/numpy-client";
import { InvalidConfigError, InvalidKeyFileError, errorMessage } from "../core/errors";
import { type Logger, createLogger } from "../core/logger";
import type { ConfigsScalar } from "../core/records/types";
import { type SuperNodeAuthFiles, type SuperNodeHandle, startSuperNode } from "../supernode/supernode";

/** Node authentication keys: each a file path, or the key text itself (OpenSSH or PEM). */
export interface ClientAuthKeys {
  /** The node's EC private key: path, or OpenSSH / PEM text. */
  privateKey: string;
  /** Its public key: path, or an OpenSSH `.pub` line / PEM text. */
  publicKey: string;
}

/** What `onReady` is told once the node is registered. */
export interface ClientReadyInfo {
  nodeId: bigint;
}

export interface StartClientOptions {
  /** The client to serve (one instance answers every message, as Flower's `client=`). */
  client: Client | NumPyClient;
  /** PEM CA bundle that signed the server's certificate. */
  rootCertificates?: Buffer;
  /** Plaintext. Default: true exactly when no `rootCertificates` are given (as Flower). */
  insecure?: boolean;
  /** Retries of a failing call before giving up. Default unlimited. */
  maxRetries?: number;
  /** Total time a failing call is retried before giving up, in seconds (as Flower). Default unlimited. */
  maxWaitTime?: number;
  /** Node authentication (needs TLS). */
  authKeys?: ClientAuthKeys;
  /** Handed to the client as `context.nodeConfig` (e.g. `partition-id`). Default {}. */
  nodeConfig?: Record<string, ConfigsScalar>;
  /** Default: a text logger on stderr (Flower logs to the console). */
  logger?: Logger;
  /**
   * Aborting stops the client; startClient then resolves. It also works while the first
   * registration is still being retried (the server not up yet).
   */
  signal?: AbortSignal;
  /** Called once the node is registered with the server. */
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

/**
 * The SuperNode reads its keys from files: key text is written to a private (0700) temporary
 * directory, removed by `cleanup` as soon as the keys were loaded.
 */
function keyFiles(keys: ClientAuthKeys): { files: SuperNodeAuthFiles; cleanup: () => void } {
  if (typeof keys.privateKey !== "string" || typeof keys.publicKey !== "string") {
    throw new InvalidKeyFileError("startClient: `authKeys.privateKey` and `authKeys.publicKey` must be strings (paths or key text)");
  }
  const privateIsText = isKeyText(keys.privateKey);
  const publicIsText = isKeyText(keys.publicKey);
  if (!privateIsText && !publicIsText) {
    return { files: { privateKeyPath: keys.privateKey, publicKeyPath: keys.publicKey }, cleanup: () => undefined };
  }
  const dir = mkdtempSync(join(tmpdir(), "flwr-ts-keys-"));
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  try {
    const write = (name: string, text: string): string => {
      const path = join(dir, name);
      writeFileSync(path, text.endsWith("\n") ? text : text + "\n", { mode: 0o600 });
      return path;
    };
    return {
      files: {
        privateKeyPath: privateIsText ? write("private-key", keys.privateKey) : keys.privateKey,
        publicKeyPath: publicIsText ? write("public-key", keys.publicKey) : keys.publicKey,
      },
      cleanup,
    };
  } catch (err) {
    cleanup();
    throw new InvalidKeyFileError(`startClient: cannot stage the authentication keys: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * Connects to `serverAddress` (HOST:PORT of a Fleet API, e.g. startServer's) and serves
 * `options.client` until the server disconnects it or `signal` aborts (resolves). Rejects with
 * InvalidConfigError (options, untrusted certificate, wrong service), InvalidKeyFileError
 * (keys), AuthenticationError (refused key) or ConnectionError (retry limits reached).
 */
export async function startClient(serverAddress: string, options: StartClientOptions): Promise<void> {
  if (options === undefined || !isClientLike(options.client)) {
    throw new InvalidConfigError(
      "startClient: `client` must be a NumPyClient or a Client (an object with getParameters/fit/evaluate methods)",
    );
  }
  const { client, rootCertificates, signal } = options;
  if (rootCertificates !== undefined && !(rootCertificates instanceof Uint8Array)) {
    throw new InvalidConfigError("startClient: `rootCertificates` must be a Buffer with the PEM CA certificate(s)");
  }
  if (options.insecure === true && rootCertificates !== undefined) {
    throw new InvalidConfigError("startClient: `insecure: true` and `rootCertificates` cannot be used together");
  }
  const insecure = options.insecure ?? rootCertificates === undefined;
  if (options.maxWaitTime !== undefined && !(Number.isFinite(options.maxWaitTime) && options.maxWaitTime >= 0)) {
    throw new InvalidConfigError(`startClient: \`maxWaitTime\` must be a non-negative number of seconds, got ${options.maxWaitTime}`);
  }
  if (signal?.aborted) return;
  const logger = options.logger ?? createLogger({ format: "text", base: { component: "flwr" } });

  const keys = options.authKeys !== undefined ? keyFiles(options.authKeys) : undefined;
  let node: SuperNodeHandle;
  try {
    node = await startSuperNode(
      {
        superlink: serverAddress,
        ...(rootCertificates !== undefined ? { rootCertificates: Buffer.from(rootCertificates) } : {}),
        ...(insecure ? { insecure: true } : {}),
        ...(keys !== undefined ? { auth: keys.files } : {}),
        app: new ClientApp({ clientFn: () => client }),
        ...(options.nodeConfig !== undefined ? { nodeConfig: options.nodeConfig } : {}),
        ...(options.maxRetries !== undefined ? { maxRetries: options.maxRetries } : {}),
        ...(options.maxWaitTime !== undefined ? { maxWaitTimeMs: options.maxWaitTime * 1000 } : {}),
      },
      { logger, ...(signal !== undefined ? { signal } : {}) },
    );
  } catch (err) {
    // Aborted while still connecting: stopping is what the caller asked for, not a failure.
    if (signal?.aborted) return;
    throw err;
  } finally {
    keys?.cleanup();
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
