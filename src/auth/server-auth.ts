/**
 * SuperLink side of SuperNode authentication (docs/protocol.md, "SuperLink checks"): every Fleet RPC must carry a
 * `public-key` header naming an allowlisted key; CreateNode is answered here (the SuperLink's
 * own public key goes back as initial metadata and the key is bound to one node id); every other
 * RPC must carry an `auth-token` HMAC of the request under the ECDH-derived key and may only act
 * on the node bound to that key. Any failure ends the call with UNAUTHENTICATED "Access denied",
 * as Flower does; the precise reason is logged, never sent.
 *
 * Deliberate differences from Flower 1.10: a `public-key` or `auth-token` header that is not
 * valid base64 ("Incorrect padding") is also "Access denied" (UNAUTHENTICATED) instead of
 * Python's UNKNOWN "Exception calling application: Incorrect padding" — Python peers always send
 * padded values, so nothing that works with Flower changes; the allowlist can change at run time
 * (see allowlist.ts); and the MAC is accepted over the raw received bytes as well as over the
 * canonical re-encodings (docs/protocol.md, "Canonical encoding").
 */
import * as grpc from "@grpc/grpc-js";
import type { KeyObject } from "node:crypto";
import { AUTH_TOKEN_HEADER, PUBLIC_KEY_HEADER } from "../core/constants";
import { errorMessage } from "../core/errors";
import { DEFAULT_PING_INTERVAL_BOUNDS, type PingIntervalBounds, boundedPingInterval } from "../core/ping-interval";
import { boundedError, type Logger, MAX_LOGGED_ERROR_CHARS, silentLogger, truncateEcho } from "../core/logger";
import {
  FLEET_REQUEST_NAMES,
  type FleetRequestName,
  canonicalEncodeChunks,
  hasPrefixRelatedMapKeys,
} from "../core/wire/canonical";
import {
  CreateNodeResponse,
  type CreateNodeRequest,
  type DeleteNodeRequest,
  FleetService,
  type FleetServer,
  type PingRequest,
  type PullTaskInsRequest,
  type PushTaskResRequest,
} from "../proto/flwr/proto/fleet";
import type { GetRunRequest } from "../proto/flwr/proto/run";
import { type IncidentReporter, toServiceError } from "../transport/status";
import type { Allowlist, AllowlistChange } from "./allowlist";
import { base64UrlPadded, decodeBase64UrlLikePython, deriveHmacKey, verifyAuthToken } from "./crypto";
import { HmacKeyPrecomputer } from "./hmac-key-precompute";
import { assertKeyPair, sshFingerprint } from "./keys";

/** The slice of the SuperLink State that authentication needs (the State interface has it). */
export interface FleetAuthState {
  getNodeId(publicKey: Uint8Array): Promise<bigint | undefined>;
  createNode(pingInterval: number, publicKey: Uint8Array): Promise<bigint>;
  acknowledgePing(nodeId: bigint, pingInterval: number): Promise<boolean>;
  getNodes(runId: bigint): Promise<Set<bigint>>;
}

export interface FleetAuthenticatorOptions {
  allowlist: Allowlist;
  serverPrivateKey: KeyObject;
  /** Canonical PEM of the SuperLink's public key; must be the public half of serverPrivateKey. */
  serverPublicKeyPem: string;
  state: FleetAuthState;
  logger?: Logger;
  /** Most node HMAC keys kept; default 10 000. */
  hmacKeyCacheSize?: number;
  /** Accepted ping_interval range of CreateNode (default DEFAULT_PING_INTERVAL_BOUNDS). */
  pingIntervalBounds?: PingIntervalBounds;
  /**
   * Derive the HMAC key of every allowlisted key (and of keys added later) ahead of its first
   * MAC'd call, in a worker thread (hmac-key-precompute.ts); until then the on-demand path
   * serves it. Default false; `close()` stops it.
   */
  precomputeHmacKeys?: boolean;
  /**
   * Called when a node's first MAC-checked call after CreateNode brought it online (see
   * `authenticate`), with the ping interval its CreateNode announced (e.g. for metrics).
   */
  onFirstCallOnline?: (nodeId: bigint, pingIntervalSeconds: number) => void;
}

/** Outcome of authenticating one request. */
export type AuthVerdict =
  | { ok: true; publicKeyPem: string; /** Undefined only for CreateNode. */ nodeId: bigint | undefined }
  | { ok: false; reason: string; nodeId?: bigint };

/** Outcome of the header checks (`checkHeaders`); `token` is the decoded auth-token. */
export type HeaderVerdict =
  | { ok: true; publicKeyPem: string; nodeId: bigint | undefined; token: Buffer | undefined }
  | { ok: false; reason: string; nodeId?: bigint };

/** Default bound of the per-node HMAC key cache. */
const DEFAULT_HMAC_KEY_CACHE_SIZE = 10_000;

/**
 * The authentication rules, free of gRPC plumbing: checks headers and requests, registers
 * nodes on CreateNode. Keeps the derived HMAC key of each node key in a bounded LRU cache (or,
 * with `precomputeHmacKeys`, derived ahead for every allowlisted key) and drops the keys of
 * nodes removed from the allowlist. Call `close()` to stop listening to the allowlist.
 */
export class FleetAuthenticator {
  /** `public-key` header value the SuperLink sends with CreateNode responses. */
  readonly serverPublicKeyHeader: string;
  readonly allowlist: Allowlist;
  private readonly serverPrivateKey: KeyObject;
  private readonly state: FleetAuthState;
  private readonly logger: Logger;
  private readonly cacheSize: number;
  private readonly pingIntervalBounds: PingIntervalBounds;
  /** Keys derived on demand, LRU-bounded by cacheSize. */
  private readonly hmacKeys = new Map<string, Buffer>();
  /** Precomputed keys of allowlisted keys: kept while the key is allowlisted (44 bytes each). */
  private readonly precomputed = new Map<string, Buffer>();
  private readonly precomputer: HmacKeyPrecomputer | undefined;
  /** Last authenticated request per node (bounded like hmacKeys): spots a key used by two live SuperNodes. */
  private readonly lastSeen = new Map<bigint, { atMs: number; peer: string; windowMs: number; warnedAtMs: number }>();
  /** Nodes registered (CreateNode) whose first MAC-checked call is still to come -> announced ping interval (s). */
  private readonly awaitingFirstCall = new Map<bigint, number>();
  private readonly onFirstCallOnline: ((nodeId: bigint, pingIntervalSeconds: number) => void) | undefined;
  private readonly onAllowlistChange = (change: AllowlistChange): void => {
    for (const pem of change.removed) {
      this.hmacKeys.delete(pem);
      this.precomputed.delete(pem);
    }
    this.precomputer?.remove(change.removed);
    this.precomputer?.add(change.added);
  };

  /** Throws InvalidKeyFileError if serverPublicKeyPem does not belong to serverPrivateKey. */
  constructor(options: FleetAuthenticatorOptions) {
    assertKeyPair(options.serverPrivateKey, options.serverPublicKeyPem, {
      privatePath: "the SuperLink private key",
      publicPath: "the SuperLink public key",
    });
    this.allowlist = options.allowlist;
    this.serverPrivateKey = options.serverPrivateKey;
    this.serverPublicKeyHeader = base64UrlPadded(Buffer.from(options.serverPublicKeyPem, "latin1"));
    this.state = options.state;
    this.logger = options.logger ?? silentLogger();
    this.cacheSize = Math.max(1, options.hmacKeyCacheSize ?? DEFAULT_HMAC_KEY_CACHE_SIZE);
    this.pingIntervalBounds = options.pingIntervalBounds ?? DEFAULT_PING_INTERVAL_BOUNDS;
    this.onFirstCallOnline = options.onFirstCallOnline;
    if (options.precomputeHmacKeys === true) {
      const logger = this.logger;
      this.precomputer = new HmacKeyPrecomputer({
        privateKey: options.serverPrivateKey,
        onDerived: (pem, hmacKey) => {
          // A key removed while its derivation was in flight stays out.
          if (!this.allowlist.has(pem)) return;
          this.precomputed.set(pem, hmacKey);
          this.hmacKeys.delete(pem);
        },
        onFailed: (pem, err) => {
          logger.debug(
            { event: "superlink.hmac-key-precompute-failed", key: fingerprintOfPem(pem), err: boundedError(err) },
            `Could not precompute a node key's HMAC key (left to its first call): ${errorMessage(err)}`,
          );
        },
        onFinished: ({ derived, failed, ms }) => {
          logger.debug(
            { event: "superlink.hmac-keys-precomputed", derived, failed, ms: Math.round(ms) },
            `Precomputed the HMAC keys of ${derived} node key(s) in ${Math.round(ms)} ms`,
          );
        },
      });
    }
    this.allowlist.on("change", this.onAllowlistChange);
    this.precomputer?.add(this.allowlist.values());
  }

  /**
   * Stops following allowlist changes and stops precomputing (results in flight are dropped;
   * `settled()` waits for them). The authenticator stays usable.
   */
  close(): void {
    this.allowlist.off("change", this.onAllowlistChange);
    this.precomputer?.stop();
  }

  /** Resolves once no precomputation is in flight. */
  async settled(): Promise<void> {
    await this.precomputer?.settled();
  }

  /** Number of node HMAC keys derived on demand and cached (for tests and metrics). */
  get cachedKeys(): number {
    return this.hmacKeys.size;
  }

  /** Number of precomputed node HMAC keys (for tests and metrics). */
  get precomputedKeys(): number {
    return this.precomputed.size;
  }

  /**
   * The checks that need only the headers, made before any request byte is read (see
   * `fleetAuthenticationGate`): the `public-key` header value must decode to an allowlisted PEM;
   * for every request but CreateNode, `auth-token` must be present and that key must be bound to
   * a node. Each failure is one Flower also refuses with UNAUTHENTICATED "Access denied" (it reads
   * the request first, then finds the MAC or the node missing). Never throws.
   */
  async checkHeaders(
    name: FleetRequestName,
    headers: { publicKey: string | undefined; authToken: string | undefined },
  ): Promise<HeaderVerdict> {
    const key = this.checkKeyHeader(headers.publicKey);
    if (!key.ok) return key;
    const pem = key.publicKeyPem;
    if (name === "CreateNodeRequest") return { ok: true, publicKeyPem: pem, nodeId: undefined, token: undefined };

    const nodeId = await this.state.getNodeId(Buffer.from(pem, "latin1"));
    const fail = (reason: string): HeaderVerdict =>
      nodeId === undefined ? { ok: false, reason } : { ok: false, reason, nodeId };
    let token: Buffer;
    try {
      token = decodeBase64UrlLikePython(headers.authToken ?? "");
    } catch (err) {
      return fail(`auth-token header is not valid base64: ${errorMessage(err)}`);
    }
    if (token.length === 0) return fail("no auth-token header");
    if (nodeId === undefined) return fail("no node is registered for this public key (CreateNode first)");
    return { ok: true, publicKeyPem: pem, nodeId, token };
  }

  /**
   * Checks one request (docs/protocol.md, "SuperLink checks", steps 1 and 3): the header checks of `checkHeaders`,
   * then, for every request but CreateNode, `auth-token` must be the HMAC of the request (its
   * upb-order or lexicographic-order canonical encoding, or `rawBytes` as received) and the
   * request must act on the node bound to the key. Never throws for bad input; the verdict says
   * why it failed (a state failure rejects).
   */
  async authenticate(
    name: FleetRequestName,
    request: object,
    headers: { publicKey: string | undefined; authToken: string | undefined },
    rawBytes?: Uint8Array,
  ): Promise<AuthVerdict> {
    const checked = await this.checkHeaders(name, headers);
    if (!checked.ok) return checked;
    const { publicKeyPem: pem, nodeId, token } = checked;
    // CreateNode needs no more (checkHeaders gives the other requests a node and a token).
    if (name === "CreateNodeRequest" || nodeId === undefined || token === undefined)
      return { ok: true, publicKeyPem: pem, nodeId: undefined };
    const fail = (reason: string): AuthVerdict => ({ ok: false, reason, nodeId });
    let hmacKey: Buffer;
    try {
      hmacKey = this.hmacKeyFor(pem);
    } catch (err) {
      return fail(errorMessage(err));
    }
    if (!this.macMatches(name, request, hmacKey, token, rawBytes)) return fail("auth-token does not match the request");

    const binding = await this.checkNodeBinding(name, request, nodeId);
    if (binding !== undefined) return fail(binding);
    await this.onFirstCheckedCall(name, nodeId);
    return { ok: true, publicKeyPem: pem, nodeId };
  }

  /**
   * The first MAC-checked call after CreateNode proves the node holds its private key: it brings
   * the node online for the ping interval CreateNode announced, as a Ping would. So our
   * SuperNodes need no Ping right after CreateNode (their first call is the first pull); a Ping
   * sets liveness itself, a DeleteNode ends it.
   */
  private async onFirstCheckedCall(name: FleetRequestName, nodeId: bigint): Promise<void> {
    const interval = this.awaitingFirstCall.get(nodeId);
    if (interval === undefined) return;
    this.awaitingFirstCall.delete(nodeId);
    if (name === "PingRequest" || name === "DeleteNodeRequest") return;
    if (!(await this.state.acknowledgePing(nodeId, interval))) return;
    this.noteSeen(nodeId, "", interval);
    this.onFirstCallOnline?.(nodeId, interval);
  }

  /** Remembers a registered node until its first MAC-checked call (bounded like the key cache: the oldest goes). */
  private awaitFirstCall(nodeId: bigint, pingInterval: number): void {
    this.awaitingFirstCall.delete(nodeId);
    if (this.awaitingFirstCall.size >= this.cacheSize) {
      const oldest = this.awaitingFirstCall.keys().next().value;
      if (oldest !== undefined) this.awaitingFirstCall.delete(oldest);
    }
    this.awaitingFirstCall.set(nodeId, pingInterval);
  }

  /**
   * The header-only part of `authenticate` (docs/protocol.md, "SuperLink checks", step 1): the `public-key` header decodes to
   * an allowlisted PEM. Cheap, needs no request body: transports can refuse strangers before
   * reading what they send. Never throws.
   */
  checkKeyHeader(
    publicKeyHeader: string | undefined,
  ): { ok: true; publicKeyPem: string } | { ok: false; reason: string } {
    let pem: string;
    try {
      pem = decodeBase64UrlLikePython(publicKeyHeader ?? "").toString("latin1");
    } catch (err) {
      return { ok: false, reason: `public-key header is not valid base64: ${errorMessage(err)}` };
    }
    if (pem === "") return { ok: false, reason: "no public-key header" };
    if (!this.allowlist.has(pem)) return { ok: false, reason: "public key not in the allowlist" };
    return { ok: true, publicKeyPem: pem };
  }

  /**
   * CreateNode for an allowlisted key (docs/protocol.md, "SuperLink checks", step 2): the node already bound to the key, or
   * a new node bound to it. Returns 0n only if the state could not create one (Flower's failure
   * value). An out-of-range `pingInterval` is MalformedMessageError (see boundedPingInterval).
   *
   * flwr-ts: CreateNode carries no MAC (anyone holding the public key can send it), so it never
   * changes liveness: an existing node keeps its liveness as it is (neither extended nor cut
   * short), and a new node starts offline. Only MAC-checked calls bring a node online: a Ping, or
   * the node's first MAC-checked call after this CreateNode (for the interval announced here;
   * see `onFirstCheckedCall`). Flower's SuperNodes ping right after CreateNode; ours pull first.
   * Flower 1.10 extended the liveness here.
   */
  async registerNode(publicKeyPem: string, pingInterval: number, peer = ""): Promise<bigint> {
    const interval = boundedPingInterval(pingInterval, this.pingIntervalBounds);
    const keyBytes = Buffer.from(publicKeyPem, "latin1");
    const existing = await this.state.getNodeId(keyBytes);
    if (existing !== undefined) {
      this.warnIfStillOnline(existing, publicKeyPem, peer);
      this.logRegistered(existing, peer, true);
      this.awaitFirstCall(existing, interval);
      return existing;
    }
    // Interval 0: online until now, i.e. offline until its first MAC-checked call.
    const created = await this.state.createNode(0, keyBytes);
    if (created !== 0n) {
      this.logRegistered(created, peer, false);
      this.awaitFirstCall(created, interval);
      return created;
    }
    // Another CreateNode for the same key (here or on another replica) won the race: reuse its
    // node, as Flower would.
    const raced = (await this.state.getNodeId(keyBytes)) ?? 0n;
    if (raced !== 0n) this.awaitFirstCall(raced, interval);
    return raced;
  }

  private logRegistered(nodeId: bigint, peer: string, reused: boolean): void {
    this.logger.info(
      { event: "superlink.node-registered", nodeId: nodeId.toString(), authenticated: true, reused, peer },
      `Node ${nodeId} ${reused ? "registered again" : "registered"} (authenticated) from ${peer}`,
    );
  }

  /** After a MAC-checked request of `nodeId`: remembered for the duplicate-key warning (a Ping sets its window). */
  noteAuthenticated(nodeId: bigint, peer: string, name: FleetRequestName, request: object): void {
    this.noteSeen(nodeId, peer, name === "PingRequest" ? (request as PingRequest).pingInterval : undefined);
  }

  /** Records a MAC-checked request; a Ping also sets the window in which the node counts as live. */
  private noteSeen(nodeId: bigint, peer: string, pingInterval?: number): void {
    const previous = this.lastSeen.get(nodeId);
    const windowMs =
      pingInterval !== undefined && Number.isFinite(pingInterval) ? pingInterval * 1000 : (previous?.windowMs ?? 0);
    this.lastSeen.delete(nodeId);
    if (this.lastSeen.size >= this.cacheSize) {
      const oldest = this.lastSeen.keys().next().value;
      if (oldest !== undefined) this.lastSeen.delete(oldest);
    }
    this.lastSeen.set(nodeId, { atMs: Date.now(), peer, windowMs, warnedAtMs: previous?.warnedAtMs ?? -Infinity });
  }

  /**
   * A CreateNode for a key whose node made a MAC-checked request within its ping interval:
   * most likely the same key file on two machines; both then act as one node and take each
   * other's tasks. A SuperNode restarted right after a crash (or anyone replaying the public
   * key, since CreateNode has no MAC) looks the same, hence only a warning.
   */
  private warnIfStillOnline(nodeId: bigint, publicKeyPem: string, peer: string): void {
    const seen = this.lastSeen.get(nodeId);
    if (seen === undefined) return;
    const now = Date.now();
    const agoMs = now - seen.atMs;
    // CreateNode carries no MAC, so anyone with the public key can repeat it: one warning per window.
    if (agoMs >= seen.windowMs || now - seen.warnedAtMs < seen.windowMs) return;
    seen.warnedAtMs = now;
    this.logger.warn(
      {
        event: "superlink.duplicate-node-key",
        nodeId: nodeId.toString(),
        key: fingerprintOfPem(publicKeyPem),
        peer,
        lastPeer: seen.peer,
        lastSeenMsAgo: agoMs,
      },
      `CreateNode from ${peer} for the key of node ${nodeId}, which is still online (last request ${(agoMs / 1000).toFixed(1)} s ago ` +
        `from ${seen.peer}): are two SuperNodes using the same key pair? They would share node ${nodeId} and take each other's ` +
        "messages; give each SuperNode its own key pair (a SuperNode restarted right after a crash also causes this warning)",
    );
  }

  /**
   * Logs an internal failure (a state error, a bug) of `rpc` under the incident id its INTERNAL
   * status names, so the operator can find what the caller was told about.
   */
  incidentReporter(rpc: string): IncidentReporter {
    return (incidentId, err) => {
      this.logger.error(
        { event: "fleet.auth-internal-error", rpc, incidentId, err: boundedError(err) },
        `${rpc} failed (incident ${incidentId}): ${truncateEcho(errorMessage(err), MAX_LOGGED_ERROR_CHARS)}`,
      );
    };
  }

  /** Logs a rejection with the reason and key fingerprint, never the key or token. */
  logDenied(rpc: string, verdict: Extract<AuthVerdict, { ok: false }>, publicKeyHeader: string | undefined): void {
    const fields: Record<string, unknown> = { event: "fleet.auth-denied", rpc, reason: verdict.reason };
    if (verdict.nodeId !== undefined) fields["nodeId"] = verdict.nodeId.toString();
    const fingerprint = fingerprintOfHeader(publicKeyHeader);
    if (fingerprint !== undefined) fields["key"] = fingerprint;
    this.logger.warn(fields, `${rpc}: access denied (${verdict.reason})`);
  }

  private hmacKeyFor(pem: string): Buffer {
    const precomputed = this.precomputed.get(pem);
    if (precomputed !== undefined) return precomputed;
    const cached = this.hmacKeys.get(pem);
    if (cached !== undefined) {
      // Move to the back: the Map's insertion order is the LRU order.
      this.hmacKeys.delete(pem);
      this.hmacKeys.set(pem, cached);
      return cached;
    }
    const key = deriveHmacKey(this.serverPrivateKey, pem);
    if (this.hmacKeys.size >= this.cacheSize) {
      const oldest = this.hmacKeys.keys().next().value;
      if (oldest !== undefined) this.hmacKeys.delete(oldest);
    }
    this.hmacKeys.set(pem, key);
    return key;
  }

  private macMatches(
    name: FleetRequestName,
    request: object,
    hmacKey: Buffer,
    token: Buffer,
    rawBytes: Uint8Array | undefined,
  ): boolean {
    // Our own SuperNode sends exactly the bytes it MACs, so the raw bytes usually match at once.
    if (rawBytes !== undefined && verifyAuthToken(hmacKey, rawBytes, token)) return true;
    try {
      // As chunks: the payload bytes are MAC'd where they are, not copied.
      if (verifyAuthToken(hmacKey, canonicalEncodeChunks(name, request, "upb").chunks, token)) return true;
      // Python's C++ / pure-Python protobuf order map keys differently (docs/protocol.md, "Canonical encoding").
      return (
        hasPrefixRelatedMapKeys(name, request) &&
        verifyAuthToken(hmacKey, canonicalEncodeChunks(name, request, "lexicographic").chunks, token)
      );
    } catch {
      // A request with no canonical encoding (e.g. two oneof members set) can only match raw.
      return false;
    }
  }

  private async checkNodeBinding(name: FleetRequestName, request: object, nodeId: bigint): Promise<string | undefined> {
    switch (name) {
      case "PushTaskResRequest": {
        const first = (request as PushTaskResRequest).taskResList[0];
        if (first === undefined) return "PushTaskRes without results";
        const producer = first.task?.producer?.nodeId ?? 0n;
        return producer === nodeId ? undefined : `PushTaskRes produced by node ${producer}, not by this node`;
      }
      case "GetRunRequest": {
        const runId = (request as GetRunRequest).runId;
        return (await this.state.getNodes(runId)).has(nodeId)
          ? undefined
          : `GetRun for run ${runId}: unknown run or node not online`;
      }
      case "DeleteNodeRequest":
      case "PingRequest":
      case "PullTaskInsRequest": {
        const claimed = (request as DeleteNodeRequest | PingRequest | PullTaskInsRequest).node?.nodeId ?? 0n;
        return claimed === nodeId ? undefined : `request names node ${claimed}, not this node`;
      }
      default:
        return undefined;
    }
  }
}

function fingerprintOfPem(pem: string): string | undefined {
  try {
    return sshFingerprint(pem);
  } catch {
    return undefined;
  }
}

function fingerprintOfHeader(header: string | undefined): string | undefined {
  if (!header) return undefined;
  try {
    return sshFingerprint(decodeBase64UrlLikePython(header).toString("latin1"));
  } catch {
    return undefined;
  }
}

type FleetMethod = keyof typeof FLEET_REQUEST_NAMES;

/** A header's first value as text (Flower reads the first match; absent -> undefined). */
function firstHeader(metadata: grpc.Metadata, key: string): string | undefined {
  const value = metadata.get(key)[0];
  if (value === undefined) return undefined;
  return typeof value === "string" ? value : value.toString("latin1");
}

const ACCESS_DENIED: Partial<grpc.StatusObject> = { code: grpc.status.UNAUTHENTICATED, details: "Access denied" };

const REQUEST_NAME_BY_PATH = new Map<string, FleetRequestName>(
  (Object.keys(FLEET_REQUEST_NAMES) as FleetMethod[]).map((method) => [
    FleetService[method].path,
    FLEET_REQUEST_NAMES[method],
  ]),
);

/**
 * A grpc-js server interceptor that refuses a Fleet call on its headers (`checkHeaders`), before
 * any byte of the request is read or inflated: an unknown or missing key, a missing auth-token,
 * or a key bound to no node (for all but CreateNode) ends the call at once with UNAUTHENTICATED
 * "Access denied", the status Flower gives the same requests once it has read them. Calls to
 * other services pass through. Put it after the interceptors that must see the status (metrics).
 */
function fleetAuthenticationGate(authenticator: FleetAuthenticator): grpc.ServerInterceptor {
  return (method, call) => {
    const requestName = REQUEST_NAME_BY_PATH.get(method.path);
    if (requestName === undefined) return new grpc.ServerInterceptingCall(call);
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const publicKey = firstHeader(metadata, PUBLIC_KEY_HEADER);
        authenticator
          .checkHeaders(requestName, { publicKey, authToken: firstHeader(metadata, AUTH_TOKEN_HEADER) })
          .then(
            (verdict) => {
              if (verdict.ok) {
                next(metadata);
                return;
              }
              authenticator.logDenied(requestName.replace(/Request$/, ""), verdict, publicKey);
              gated.sendStatus({ code: grpc.status.UNAUTHENTICATED, details: "Access denied" });
            },
            (err: unknown) => {
              const status = toServiceError(err, authenticator.incidentReporter(requestName.replace(/Request$/, "")));
              gated.sendStatus({ code: status.code ?? grpc.status.INTERNAL, details: status.details ?? "" });
            },
          );
      })
      .build();
    const gated = new grpc.ServerInterceptingCall(call, { start: (next) => next(listener) });
    return gated;
  };
}

export interface FleetAuthenticationOptions {
  /**
   * Called with a call's request metadata once its MAC and node binding were verified (not for
   * CreateNode, which proves nothing): the peer holds the private key of its `public-key`.
   */
  onAuthenticated?(metadata: grpc.Metadata): void;
}

/**
 * Wraps a Fleet implementation with authentication. Register the returned definition and
 * implementation with `server.addService(definition, implementation)` in place of `FleetService`
 * and the plain implementation, and add `interceptor` (fleetAuthenticationGate) to the server's
 * interceptors so calls with bad headers are refused before their request is read. The
 * definition equals FleetService except that its request deserializers remember the raw request
 * bytes (for the MAC check). CreateNode never reaches the inner implementation; the other RPCs
 * reach it only once authenticated.
 */
export function withFleetAuthentication(
  implementation: FleetServer,
  authenticator: FleetAuthenticator,
  options: FleetAuthenticationOptions = {},
): {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
  interceptor: grpc.ServerInterceptor;
} {
  const rawRequests = new WeakMap<object, Buffer>();
  const definition: Record<string, grpc.MethodDefinition<object, object>> = {};
  const wrapped: grpc.UntypedServiceImplementation = {};

  for (const method of Object.keys(FLEET_REQUEST_NAMES) as FleetMethod[]) {
    const base = FleetService[method] as unknown as grpc.MethodDefinition<object, object>;
    definition[method] = {
      ...base,
      requestDeserialize: (bytes: Buffer): object => {
        const message = base.requestDeserialize(bytes);
        rawRequests.set(message, bytes);
        return message;
      },
    };
    const inner = implementation[method] as unknown as grpc.handleUnaryCall<object, object>;
    const requestName = FLEET_REQUEST_NAMES[method];
    const rpc = requestName.replace(/Request$/, "");

    const handle = async (
      call: grpc.ServerUnaryCall<object, object>,
      callback: grpc.sendUnaryData<object>,
    ): Promise<void> => {
      const publicKey = firstHeader(call.metadata, PUBLIC_KEY_HEADER);
      const verdict = await authenticator.authenticate(
        requestName,
        call.request,
        { publicKey, authToken: firstHeader(call.metadata, AUTH_TOKEN_HEADER) },
        rawRequests.get(call.request),
      );
      // The raw bytes are a view into a received chunk: a held call must not keep it alive.
      rawRequests.delete(call.request);
      if (!verdict.ok) {
        authenticator.logDenied(rpc, verdict, publicKey);
        callback(ACCESS_DENIED);
        return;
      }
      if (method === "createNode") {
        let nodeId: bigint;
        try {
          nodeId = await authenticator.registerNode(
            verdict.publicKeyPem,
            (call.request as CreateNodeRequest).pingInterval,
            call.getPeer(),
          );
        } catch (err) {
          callback(toServiceError(err, authenticator.incidentReporter(rpc)));
          return;
        }
        const headers = new grpc.Metadata();
        headers.set(PUBLIC_KEY_HEADER, authenticator.serverPublicKeyHeader);
        call.sendMetadata(headers);
        callback(null, CreateNodeResponse.fromPartial({ node: { nodeId, anonymous: false } }));
        return;
      }
      if (verdict.nodeId !== undefined)
        authenticator.noteAuthenticated(verdict.nodeId, call.getPeer(), requestName, call.request);
      options.onAuthenticated?.(call.metadata);
      inner(call, callback);
    };
    const handler: grpc.handleUnaryCall<object, object> = (call, callback) => {
      handle(call, callback).catch((err: unknown) => {
        callback(toServiceError(err, authenticator.incidentReporter(rpc)));
      });
    };
    wrapped[method] = handler;
  }
  return { definition, implementation: wrapped, interceptor: fleetAuthenticationGate(authenticator) };
}
