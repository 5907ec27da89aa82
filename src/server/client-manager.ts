/**
 * The pool of connected clients of the legacy loop (Flower's `ClientManager` /
 * `SimpleClientManager`), and node discovery through the Driver.
 *
 * Flower refreshes the pool from GetNodes in a background thread every 3 s. Here the pool is
 * refreshed right before each round is configured, and every 250 ms while a round waits for
 * `min_available_clients` — no background timer, and new nodes are seen within 250 ms.
 */
import { type Logger, silentLogger } from "../core/logger";
import { type ClientProxy, DriverClientProxy } from "./client-proxy";
import type { Driver } from "./driver";

/** Flower's default wait for enough clients: one day. */
const DEFAULT_WAIT_FOR_CLIENTS_MS = 86_400_000;
/** flwr-ts: how often GetNodes is polled while a round waits for clients. */
const DISCOVERY_INTERVAL_MS = 250;

/** Picks clients by a property. */
export interface Criterion {
  select(client: ClientProxy): boolean;
}

export interface ClientManager {
  numAvailable(): number;
  /** Adds a client; false if its cid is already registered. */
  register(client: ClientProxy): boolean;
  /** Removes a client (idempotent). */
  unregister(client: ClientProxy): void;
  /** Registered clients by cid. */
  all(): Map<string, ClientProxy>;
  /** Resolves true once at least `numClients` are registered, false after `timeoutMs`. */
  waitFor(numClients: number, timeoutMs?: number): Promise<boolean>;
  /**
   * Waits for `minNumClients` (default `numClients`), then draws `numClients` distinct clients
   * at random; [] (no error) if fewer are available after waiting.
   */
  sample(numClients: number, minNumClients?: number, criterion?: Criterion): Promise<ClientProxy[]>;
  /** Optional: brings the pool up to date now (the Server calls it before each round). */
  refresh?(): Promise<void>;
}

export interface SimpleClientManagerOptions {
  /**
   * Updates the pool (e.g. from GetNodes, see driverNodeDiscovery): called by refresh(), and
   * every `discoveryIntervalMs` while a wait is not satisfied.
   */
  discover?: (manager: ClientManager) => Promise<void>;
  discoveryIntervalMs?: number;
  /** Longest wait for enough clients. Default one day, as Flower. */
  waitTimeoutMs?: number;
  /** Aborts waits (they reject with the abort reason). */
  signal?: AbortSignal;
  /** Random source for sampling, [0, 1). Default Math.random. */
  random?: () => number;
  logger?: Logger;
}

export class SimpleClientManager implements ClientManager {
  private readonly clients = new Map<string, ClientProxy>();
  private readonly changeListeners = new Set<() => void>();
  private readonly discover: ((manager: ClientManager) => Promise<void>) | undefined;
  private readonly discoveryIntervalMs: number;
  private readonly waitTimeoutMs: number;
  private readonly signal: AbortSignal | undefined;
  private readonly random: () => number;
  private readonly logger: Logger;

  constructor(options: SimpleClientManagerOptions = {}) {
    this.discover = options.discover;
    this.discoveryIntervalMs = options.discoveryIntervalMs ?? DISCOVERY_INTERVAL_MS;
    this.waitTimeoutMs = options.waitTimeoutMs ?? DEFAULT_WAIT_FOR_CLIENTS_MS;
    this.signal = options.signal;
    this.random = options.random ?? Math.random;
    this.logger = options.logger ?? silentLogger();
  }

  numAvailable(): number {
    return this.clients.size;
  }

  register(client: ClientProxy): boolean {
    if (this.clients.has(client.cid)) return false;
    this.clients.set(client.cid, client);
    this.notify();
    return true;
  }

  unregister(client: ClientProxy): void {
    if (this.clients.delete(client.cid)) this.notify();
  }

  all(): Map<string, ClientProxy> {
    return new Map(this.clients);
  }

  async refresh(): Promise<void> {
    await this.discover?.(this);
  }

  async waitFor(numClients: number, timeoutMs: number = this.waitTimeoutMs): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    let announced = false;
    for (;;) {
      if (this.clients.size >= numClients) return true;
      this.signal?.throwIfAborted();
      if (this.discover) {
        await this.discover(this);
        if (this.clients.size >= numClients) return true;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) return false;
      if (!announced) {
        announced = true;
        this.logger.info(
          { event: "serverapp.waiting-for-clients", needed: numClients, available: this.clients.size },
          `Waiting for ${numClients} client(s) to connect (${this.clients.size} available)`,
        );
      }
      await this.waitForChange(this.discover ? Math.min(remaining, this.discoveryIntervalMs) : remaining);
    }
  }

  async sample(numClients: number, minNumClients?: number, criterion?: Criterion): Promise<ClientProxy[]> {
    await this.waitFor(minNumClients ?? numClients);
    let available = [...this.clients.values()];
    if (criterion) available = available.filter((c) => criterion.select(c));
    if (numClients > available.length) {
      this.logger.info(
        `Sampling failed: number of available clients (${available.length}) is less than number of requested clients (${numClients}).`,
      );
      return [];
    }
    // Partial Fisher-Yates: the first numClients positions become a uniform random sample.
    for (let i = 0; i < numClients; i++) {
      const j = i + Math.floor(this.random() * (available.length - i));
      [available[i], available[j]] = [available[j]!, available[i]!];
    }
    return available.slice(0, numClients);
  }

  private notify(): void {
    for (const listener of [...this.changeListeners]) listener();
  }

  /** Resolves on the next register/unregister or after `ms`; rejects if the signal aborts. */
  private waitForChange(ms: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.changeListeners.delete(done);
        this.signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = (): void => {
        clearTimeout(timer);
        this.changeListeners.delete(done);
        reject(this.signal!.reason);
      };
      const timer = setTimeout(done, ms);
      this.changeListeners.add(done);
      this.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/**
 * Flower's `_update_client_manager` step, once: registers a DriverClientProxy for every node
 * GetNodes lists that is not registered yet, and unregisters nodes that are gone. Returns the
 * function to pass as `discover` to SimpleClientManager.
 */
export function driverNodeDiscovery(
  driver: Driver,
  opts: { logger?: Logger; makeProxy?: (nodeId: bigint) => ClientProxy } = {},
): (manager: ClientManager) => Promise<void> {
  const registered = new Map<string, ClientProxy>();
  const makeProxy = opts.makeProxy ?? ((nodeId: bigint) => new DriverClientProxy(nodeId, driver));
  const logger = opts.logger ?? silentLogger();
  return async (manager) => {
    const nodeIds = await driver.getNodeIds();
    const current = new Map(nodeIds.map((id) => [id.toString(), id]));
    for (const [cid, proxy] of registered) {
      if (!current.has(cid)) {
        manager.unregister(proxy);
        registered.delete(cid);
        logger.info({ event: "serverapp.node-gone", nodeId: cid }, `Node ${cid} is no longer online`);
      }
    }
    for (const [cid, nodeId] of current) {
      if (registered.has(cid)) continue;
      const proxy = makeProxy(nodeId);
      if (manager.register(proxy)) {
        registered.set(cid, proxy);
        logger.info({ event: "serverapp.node-found", nodeId: cid }, `Node ${cid} is online`);
      }
    }
  };
}
