/**
 * The SuperNode's connection to a REST Fleet API (Flower 1.10's `--rest` transport): one POST
 * per RPC with protobuf bodies (src/core/wire/fleet-rest.ts), no retries (see src/transport/retry.ts).
 *
 * The HTTP exchange itself is a `RestPoster`, so this file imports neither Node's http nor
 * grpc-js: in Node, node-rest-poster.ts (node:https, which can take a custom CA); in a browser,
 * a poster over `fetch`. Failures are FleetCallErrors with the matching gRPC status.
 *
 * With node authentication (a flwr-ts extension: Flower's REST has none, so only our SuperLink
 * accepts it), every body is the canonical encoding and carries the gRPC transport's
 * `public-key` / `auth-token` headers; CreateNode's response header delivers the SuperLink's
 * key. A PushTaskRes refused as unauthenticated is re-sent once in the other map order, as over
 * gRPC.
 */
import { LONG_POLL_HEADER } from "../core/constants";
import { ConnectionError, InvalidConfigError } from "../core/errors";
import type { Logger } from "../core/logger";
import {
  FLEET_REQUEST_NAMES,
  type FleetRequestName,
  type MapOrder,
  hasPrefixRelatedMapKeys,
} from "../core/wire/canonical";
import { FLEET_REST_PATHS, type FleetRestMethod, PROTOBUF_CONTENT_TYPE } from "../core/wire/fleet-rest";
import { PUBLIC_KEY_HEADER } from "../core/constants";
import {
  CreateNodeRequest,
  CreateNodeResponse,
  DeleteNodeRequest,
  DeleteNodeResponse,
  PingRequest,
  PingResponse,
  PullTaskInsRequest,
  PullTaskInsResponse,
  PushTaskResRequest,
  PushTaskResResponse,
} from "../proto/flwr/proto/fleet";
import type { Node } from "../proto/flwr/proto/node";
import { GetRunRequest, GetRunResponse, type Run } from "../proto/flwr/proto/run";
import type { TaskRes } from "../proto/flwr/proto/task";
import { type CallControl, CallStatus, FleetCallError, type FleetTransport, statusForHttp } from "./fleet-transport";

/** One HTTP answer, as a RestPoster hands it back. */
export interface RestResponse {
  status: number;
  /** A response header (lower-case name), undefined when absent. */
  header: (name: string) => string | undefined;
  body: Uint8Array;
}

/**
 * Sends one POST and resolves with the answer (any status). Rejects with a FleetCallError:
 * CANCELLED when `signal` aborts, DEADLINE_EXCEEDED after `deadlineMs`, UNAVAILABLE (details
 * saying why, e.g. the TLS failure) when no answer came.
 */
type RestPoster = (
  url: string,
  body: Uint8Array,
  headers: Record<string, string>,
  control: { signal?: AbortSignal; deadlineMs?: number },
) => Promise<RestResponse>;

/** A RestPoster that can also release its connections. */
export interface ClosableRestPoster {
  post: RestPoster;
  close(): void;
}

/**
 * Node authentication for an HTTP transport: SuperNodeAuth (node:crypto, synchronous) or
 * WebSuperNodeAuth (WebCrypto, asynchronous) — both are awaited.
 */
export interface RestAuth {
  signedHeaders(
    requestName: FleetRequestName,
    request: object,
    order: MapOrder,
  ):
    | { bytes: Uint8Array; headers: Record<string, string> }
    | Promise<{ bytes: Uint8Array; headers: Record<string, string> }>;
  acceptServerPublicKeyHeader(text: string | undefined): void | Promise<void>;
}

export interface RestFleetConnectionOptions {
  /** `http://HOST:PORT` or `https://HOST:PORT` (a path prefix is kept). */
  baseUrl: string;
  poster: ClosableRestPoster;
  /** Node authentication; needs https and a flwr-ts SuperLink. */
  auth?: RestAuth;
  /** Default: silent. */
  logger?: Logger;
}

interface Codec {
  encode(request: object): { finish(): Uint8Array };
  decode(bytes: Uint8Array): object;
}

const RESPONSE_DECODERS: { [M in FleetRestMethod]: (bytes: Uint8Array) => object } = {
  createNode: (b) => CreateNodeResponse.decode(b),
  deleteNode: (b) => DeleteNodeResponse.decode(b),
  ping: (b) => PingResponse.decode(b),
  pullTaskIns: (b) => PullTaskInsResponse.decode(b),
  pushTaskRes: (b) => PushTaskResResponse.decode(b),
  getRun: (b) => GetRunResponse.decode(b),
};

const REQUEST_ENCODERS: { [M in FleetRestMethod]: Codec["encode"] } = {
  createNode: (r) => CreateNodeRequest.encode(r as CreateNodeRequest),
  deleteNode: (r) => DeleteNodeRequest.encode(r as DeleteNodeRequest),
  ping: (r) => PingRequest.encode(r as PingRequest),
  pullTaskIns: (r) => PullTaskInsRequest.encode(r as PullTaskInsRequest),
  pushTaskRes: (r) => PushTaskResRequest.encode(r as PushTaskResRequest),
  getRun: (r) => GetRunRequest.encode(r as GetRunRequest),
};

/** Most characters of an error body quoted in a message. */
const MAX_ERROR_TEXT = 200;

/** Checks a `--superlink` value for the REST transport (Flower requires the scheme). */
export function parseRestBaseUrl(value: string): URL {
  if (!/^https?:\/\//i.test(value)) {
    throw new InvalidConfigError(
      "When using the REST API, please provide `https://` or `http://` before the server address " +
        `(e.g. \`http://127.0.0.1:9093\`), got "${value}"`,
    );
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidConfigError(`Invalid SuperLink URL "${value}"`);
  }
  if (url.search !== "" || url.hash !== "" || url.username !== "" || url.password !== "") {
    throw new InvalidConfigError(`SuperLink URL "${value}" must not carry credentials, a query or a fragment`);
  }
  return url;
}

export class RestFleetConnection implements FleetTransport {
  readonly target: string;
  private readonly base: string;
  private readonly poster: ClosableRestPoster;
  private readonly auth: RestAuth | undefined;
  private readonly logger: Logger | undefined;
  private readonly inFlight = new Set<AbortController>();
  private pushOrder: MapOrder = "upb";
  private closed = false;

  constructor(options: RestFleetConnectionOptions) {
    const url = parseRestBaseUrl(options.baseUrl);
    if (options.auth !== undefined && url.protocol !== "https:") {
      throw new InvalidConfigError("Node authentication over REST requires https:// (TLS)");
    }
    this.base = url.href.replace(/\/+$/, "");
    this.target = this.base;
    this.poster = options.poster;
    this.auth = options.auth;
    this.logger = options.logger;
  }

  get authenticated(): boolean {
    return this.auth !== undefined;
  }

  async createNode(pingInterval: number, control: CallControl = {}): Promise<Node> {
    const { response, header } = await this.call(
      "createNode",
      CreateNodeRequest.fromPartial({ pingInterval }),
      control,
    );
    if (this.auth !== undefined) {
      const key = header(PUBLIC_KEY_HEADER);
      if (key === undefined || key === "") {
        throw new InvalidConfigError(
          `The SuperLink at ${this.target} did not send its public key with CreateNode: node authentication ` +
            "is off there (Flower's own REST SuperLink has none). Enable it on a flwr-ts SuperLink or start " +
            "this SuperNode without --auth-supernode-private-key/--auth-supernode-public-key.",
        );
      }
      await this.auth.acceptServerPublicKeyHeader(key);
    }
    const node = (response as CreateNodeResponse).node;
    if (node === undefined || node.nodeId === 0n) {
      throw new ConnectionError(`The SuperLink at ${this.target} could not create a node (it answered node id 0)`);
    }
    return { nodeId: node.nodeId, anonymous: false };
  }

  async deleteNode(node: Node, control: CallControl = {}): Promise<void> {
    await this.call("deleteNode", DeleteNodeRequest.fromPartial({ node }), control);
  }

  async ping(node: Node, pingInterval: number, control: CallControl = {}): Promise<boolean> {
    const { response } = await this.call("ping", PingRequest.fromPartial({ node, pingInterval }), control);
    return (response as PingResponse).success;
  }

  async pullTaskIns(node: Node, control: CallControl = {}): Promise<PullTaskInsResponse> {
    const { response } = await this.call("pullTaskIns", PullTaskInsRequest.fromPartial({ node }), control);
    return response as PullTaskInsResponse;
  }

  async pushTaskRes(taskRes: TaskRes, control: CallControl = {}): Promise<PushTaskResResponse> {
    const request = PushTaskResRequest.fromPartial({ taskResList: [taskRes] });
    const order = this.pushOrder;
    try {
      return (await this.call("pushTaskRes", request, control, order)).response as PushTaskResResponse;
    } catch (err) {
      const refused = err instanceof FleetCallError && err.code === CallStatus.UNAUTHENTICATED;
      if (!refused || this.auth === undefined || !hasPrefixRelatedMapKeys("PushTaskResRequest", request)) throw err;
      const other: MapOrder = order === "upb" ? "lexicographic" : "upb";
      const { response } = await this.call("pushTaskRes", request, control, other);
      this.pushOrder = other;
      this.logger?.info(
        { event: "supernode.map-order", order: other },
        `The SuperLink verified PushTaskRes with ${other} map-key order; using it from now on`,
      );
      return response as PushTaskResResponse;
    }
  }

  async getRun(runId: bigint, control: CallControl = {}): Promise<Run | undefined> {
    const { response } = await this.call("getRun", GetRunRequest.fromPartial({ runId }), control);
    return (response as GetRunResponse).run;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.inFlight) c.abort();
    this.inFlight.clear();
    this.poster.close();
  }

  private async call(
    method: FleetRestMethod,
    request: object,
    control: CallControl,
    order: MapOrder = "upb",
  ): Promise<{ response: object; header: (name: string) => string | undefined }> {
    if (this.closed) throw new ConnectionError(`The connection to ${this.target} is closed`);
    control.signal?.throwIfAborted();
    const headers: Record<string, string> = { "content-type": PROTOBUF_CONTENT_TYPE, accept: PROTOBUF_CONTENT_TYPE };
    let body: Uint8Array;
    if (this.auth !== undefined) {
      const signed = await this.auth.signedHeaders(FLEET_REQUEST_NAMES[method], request, order);
      body = signed.bytes;
      Object.assign(headers, signed.headers);
    } else {
      body = REQUEST_ENCODERS[method](request).finish();
    }
    if (control.longPollMs !== undefined)
      headers[LONG_POLL_HEADER] = String(Math.max(0, Math.floor(control.longPollMs)));

    // One controller per call, so close() can cancel it and the caller's signal still can.
    const cancel = new AbortController();
    const onAbort = (): void => cancel.abort();
    control.signal?.addEventListener("abort", onAbort, { once: true });
    this.inFlight.add(cancel);
    let answer: RestResponse;
    try {
      answer = await this.poster.post(`${this.base}${FLEET_REST_PATHS[method]}`, body, headers, {
        signal: cancel.signal,
        ...(control.deadlineMs !== undefined ? { deadlineMs: control.deadlineMs } : {}),
      });
    } finally {
      control.signal?.removeEventListener("abort", onAbort);
      this.inFlight.delete(cancel);
    }
    const path = FLEET_REST_PATHS[method];
    if (answer.status !== 200) {
      const text = new TextDecoder().decode(answer.body.subarray(0, MAX_ERROR_TEXT)).trim();
      throw new FleetCallError(
        statusForHttp(answer.status),
        `HTTP ${answer.status} from POST ${path}${text ? `: ${text}` : ""}`,
        answer.status,
      );
    }
    const type = answer.header("content-type")?.split(";")[0]?.trim().toLowerCase();
    if (type !== PROTOBUF_CONTENT_TYPE) {
      throw new FleetCallError(
        CallStatus.INTERNAL,
        `POST ${path} answered Content-Type "${type ?? "(none)"}", not ${PROTOBUF_CONTENT_TYPE}`,
        200,
      );
    }
    let response: object;
    try {
      response = RESPONSE_DECODERS[method](answer.body);
    } catch (err) {
      throw new FleetCallError(
        CallStatus.INTERNAL,
        `POST ${path} answered a malformed response: ${(err as Error).message}`,
        200,
        { cause: err },
      );
    }
    return { response, header: answer.header };
  }
}
