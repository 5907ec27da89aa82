/**
 * The SuperNode's grpc-rere connection to the SuperLink's Fleet API: one channel, one method per
 * RPC, no retries (src/transport/retry.ts) and no Flower rules (registration.ts, task-runner.ts).
 *
 * With node authentication, every request is encoded once with the canonical (upb-order)
 * encoder, exactly those bytes are sent, and the `auth-token` MAC is computed over them
 * (docs/protocol.md, "Headers and MAC", "Canonical encoding"); the SuperLink's public key is taken from the CreateNode response headers.
 * A PushTaskRes refused with UNAUTHENTICATED whose maps have prefix-related keys is re-sent
 * once in lexicographic map order, for a Python SuperLink on the C++ protobuf backend; the
 * order that worked is kept for later pushes.
 *
 * Every call can be cancelled with an AbortSignal; `close()` cancels whatever is in flight.
 */
import * as grpc from "@grpc/grpc-js";
import type { SuperNodeAuth } from "../auth/client-auth";
import { parseAddress } from "../core/address";
import { LONG_POLL_HEADER, PUBLIC_KEY_HEADER } from "../core/constants";
import { ConnectionError, InvalidConfigError } from "../core/errors";
import type { Logger } from "../core/logger";
import { silentLogger } from "../core/logger";
import { FLEET_REQUEST_NAMES, type MapOrder, hasPrefixRelatedMapKeys } from "../core/wire/canonical";
import {
  CreateNodeRequest,
  type CreateNodeResponse,
  DeleteNodeRequest,
  FleetService,
  PingRequest,
  type PingResponse,
  PullTaskInsRequest,
  type PullTaskInsResponse,
  PushTaskResRequest,
  type PushTaskResResponse,
} from "../proto/flwr/proto/fleet";
import type { Node } from "../proto/flwr/proto/node";
import { GetRunRequest, type GetRunResponse, type Run } from "../proto/flwr/proto/run";
import type { TaskRes } from "../proto/flwr/proto/task";
import { createClient, unaryCall } from "../transport/channel";
import { FLEET_TASK_MESSAGES, withChunkedSerializers } from "../transport/chunked-serializers";
import { sendableRequest } from "../transport/grpc-zero-copy";
import { isServiceError } from "../transport/status";
import { sharedChannelCredentials } from "../transport/tls";
import type { CallControl, FleetTransport } from "./fleet-transport";

export interface FleetConnectionOptions {
  /** HOST:PORT of the SuperLink's Fleet API. */
  superlink: string;
  /** CA bundle (PEM) to verify the SuperLink; without it (and without `insecure`), system roots. */
  rootCertificates?: Buffer;
  /** Plaintext; cannot be combined with `rootCertificates`. */
  insecure?: boolean;
  /** Node authentication; requires TLS on the SuperLink side. */
  auth?: SuperNodeAuth;
  /** Extra grpc-js channel options (e.g. `grpc.ssl_target_name_override` in tests). */
  channelOptions?: grpc.ChannelOptions;
  logger?: Logger;
}

export type { CallControl } from "./fleet-transport";

type FleetMethod = keyof typeof FleetService;

// PushTaskRes may carry large records: without auth, encode it as chunks (no payload copy).
const FLEET_SERVICE = withChunkedSerializers(FleetService, FLEET_TASK_MESSAGES);

/** Bytes already encoded by us go on the wire unchanged. */
const sendBytesAsIs = (bytes: Buffer): Buffer => bytes;

export class FleetConnection implements FleetTransport {
  /** HOST:PORT this connection talks to. */
  readonly target: string;
  private readonly client: grpc.Client;
  private readonly auth: SuperNodeAuth | undefined;
  private readonly logger: Logger;
  private readonly inFlight = new Set<grpc.ClientUnaryCall>();
  /** Map order the SuperLink verified our last PushTaskRes MAC with. */
  private pushOrder: MapOrder = "upb";
  private closed = false;

  /** Validates the address and credentials options and creates the (lazily connecting) channel. */
  constructor(options: FleetConnectionOptions) {
    parseAddress(options.superlink);
    this.target = options.superlink;
    this.auth = options.auth;
    this.logger = options.logger ?? silentLogger();
    const credentials = sharedChannelCredentials({
      ...(options.rootCertificates !== undefined ? { rootCertificates: options.rootCertificates } : {}),
      ...(options.insecure !== undefined ? { insecure: options.insecure } : {}),
    });
    this.client = createClient(grpc.Client, options.superlink, credentials, {
      // Credentials are shared per CA bundle; each SuperNode still has its own connection.
      "grpc.use_local_subchannel_pool": 1,
      ...options.channelOptions,
    });
  }

  /** Whether requests carry node-authentication metadata. */
  get authenticated(): boolean {
    return this.auth !== undefined;
  }

  /**
   * Registers this node. With authentication, derives the shared MAC key from the SuperLink's
   * public key in the response headers; a SuperLink that sends none has authentication off, which
   * retrying cannot fix (InvalidConfigError). A node id of 0 (Flower's "could not create") is a
   * retryable ConnectionError.
   */
  async createNode(pingInterval: number, control: CallControl = {}): Promise<Node> {
    const request = CreateNodeRequest.fromPartial({ pingInterval });
    const { response, headers } = await this.call<CreateNodeResponse>("createNode", request, control);
    if (this.auth !== undefined) {
      if (headers.get(PUBLIC_KEY_HEADER).length === 0) {
        throw new InvalidConfigError(
          `The SuperLink at ${this.target} did not send its public key with CreateNode: node authentication ` +
            "appears to be disabled on the SuperLink. Enable it there (--auth-list-public-keys, " +
            "--auth-superlink-private-key, --auth-superlink-public-key) or start this SuperNode without " +
            "--auth-supernode-private-key/--auth-supernode-public-key.",
        );
      }
      this.auth.acceptCreateNodeMetadata(headers);
    }
    const node = response.node;
    if (node === undefined || node.nodeId === 0n) {
      throw new ConnectionError(`The SuperLink at ${this.target} could not create a node (it answered node id 0)`);
    }
    return { nodeId: node.nodeId, anonymous: false };
  }

  /** Unregisters this node. */
  async deleteNode(node: Node, control: CallControl = {}): Promise<void> {
    await this.call("deleteNode", DeleteNodeRequest.fromPartial({ node }), control);
  }

  /** Announces liveness; false means the SuperLink does not know this node (any more). */
  async ping(node: Node, pingInterval: number, control: CallControl = {}): Promise<boolean> {
    const { response } = await this.call<PingResponse>(
      "ping",
      PingRequest.fromPartial({ node, pingInterval }),
      control,
    );
    return response.success;
  }

  /** Asks for the next TaskIns of this node (at most one; our SuperLink may hold an empty answer briefly). */
  async pullTaskIns(node: Node, control: CallControl = {}): Promise<PullTaskInsResponse> {
    const { response } = await this.call<PullTaskInsResponse>(
      "pullTaskIns",
      PullTaskInsRequest.fromPartial({ node }),
      control,
    );
    return response;
  }

  /** Sends one result. */
  async pushTaskRes(taskRes: TaskRes, control: CallControl = {}): Promise<PushTaskResResponse> {
    const request = PushTaskResRequest.fromPartial({ taskResList: [taskRes] });
    const order = this.pushOrder;
    try {
      const { response } = await this.call<PushTaskResResponse>("pushTaskRes", request, control, order);
      return response;
    } catch (err) {
      const refused = isServiceError(err) && err.code === grpc.status.UNAUTHENTICATED;
      if (!refused || this.auth === undefined || !hasPrefixRelatedMapKeys("PushTaskResRequest", request)) throw err;
      // Same MAC over the other map order: a Python SuperLink on the C++ protobuf backend sorts
      // map keys lexicographically, upb puts a longer key before its prefix (docs/protocol.md, "Canonical encoding").
      const other: MapOrder = order === "upb" ? "lexicographic" : "upb";
      const { response } = await this.call<PushTaskResResponse>("pushTaskRes", request, control, other);
      this.pushOrder = other;
      this.logger.info(
        { event: "supernode.map-order", order: other },
        `The SuperLink verified PushTaskRes with ${other} map-key order; using it from now on`,
      );
      return response;
    }
  }

  /** Run details; undefined when the SuperLink does not know the run (Flower's empty response). */
  async getRun(runId: bigint, control: CallControl = {}): Promise<Run | undefined> {
    const { response } = await this.call<GetRunResponse>("getRun", GetRunRequest.fromPartial({ runId }), control);
    return response.run;
  }

  /** Cancels calls in flight and closes the channel. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const call of this.inFlight) call.cancel();
    this.inFlight.clear();
    this.client.close();
  }

  private async call<Res>(
    method: FleetMethod,
    request: object,
    control: CallControl,
    order: MapOrder = "upb",
  ): Promise<{ response: Res; headers: grpc.Metadata }> {
    if (this.closed) throw new ConnectionError(`The connection to ${this.target} is closed`);
    control.signal?.throwIfAborted();
    const definition = FLEET_SERVICE[method];
    const name = FLEET_REQUEST_NAMES[method];
    let bytes: Buffer;
    let metadata: grpc.Metadata;
    if (this.auth !== undefined) {
      // The MAC covers exactly the bytes we send (payload bytes neither copied nor joined).
      const signed = this.auth.signedRequestChunks(name, request, order);
      bytes = sendableRequest(signed.encoded);
      metadata = signed.metadata;
    } else {
      bytes = (definition.requestSerialize as (value: object) => Buffer)(request);
      metadata = new grpc.Metadata();
    }
    if (control.longPollMs !== undefined)
      metadata.set(LONG_POLL_HEADER, String(Math.max(0, Math.floor(control.longPollMs))));
    const options: Partial<grpc.CallOptions> = {};
    if (control.deadlineMs !== undefined) options.deadline = Date.now() + control.deadlineMs;

    let call: grpc.ClientUnaryCall | undefined;
    const onAbort = (): void => call?.cancel();
    control.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await unaryCall<Buffer, Res>(
        (req, md, opts, callback) => {
          call = this.client.makeUnaryRequest(
            definition.path,
            sendBytesAsIs,
            definition.responseDeserialize as (bytes: Buffer) => Res,
            req,
            md,
            opts,
            callback as grpc.requestCallback<Res>,
          );
          this.inFlight.add(call);
          return call;
        },
        bytes,
        metadata,
        options,
      );
    } finally {
      control.signal?.removeEventListener("abort", onAbort);
      if (call !== undefined) this.inFlight.delete(call);
    }
  }
}
