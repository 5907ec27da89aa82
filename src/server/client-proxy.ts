/**
 * A connected client as the legacy strategy loop sees it (Flower's `ClientProxy`), and the one
 * implementation that reaches a SuperNode through the Driver API (`DriverClientProxy`): one
 * message per call, converted to and from the legacy types with Flower's RecordSet keys; the
 * calls made together (a round's) share their pushes and pulls (message-batcher.ts).
 */
import { MessageType } from "../core/constants";
import { FlwrError, NotFoundError, TimeoutError } from "../core/errors";
import {
  evaluateInsToRecordSet,
  fitInsToRecordSet,
  getParametersInsToRecordSet,
  getPropertiesInsToRecordSet,
  recordSetToEvaluateRes,
  recordSetToFitRes,
  recordSetToGetParametersRes,
  recordSetToGetPropertiesRes,
} from "../core/records/compat";
import type {
  EvaluateIns,
  EvaluateRes,
  FitIns,
  FitRes,
  GetParametersIns,
  GetParametersRes,
  GetPropertiesIns,
  GetPropertiesRes,
} from "../core/records/legacy-types";
import type { RecordSet } from "../core/records/types";
import type { Driver } from "./driver";
import { batcherFor } from "./message-batcher";

/** How one client call is made. */
export interface ClientCallOptions {
  /** Round timeout in seconds; also the message TTL. Undefined = wait without limit, TTL 3600. */
  timeoutSeconds?: number | undefined;
  /** The server round; becomes the message group id (round 0 / undefined -> ""). */
  groupId?: number | undefined;
  /** Aborts the wait (the message stays queued at the SuperLink). */
  signal?: AbortSignal | undefined;
}

/** One client of the legacy loop. Every method rejects when the client fails to answer. */
export interface ClientProxy {
  /** Flower's client id: the node id in decimal. */
  readonly cid: string;
  getProperties(ins: GetPropertiesIns, opts?: ClientCallOptions): Promise<GetPropertiesRes>;
  getParameters(ins: GetParametersIns, opts?: ClientCallOptions): Promise<GetParametersRes>;
  fit(ins: FitIns, opts?: ClientCallOptions): Promise<FitRes>;
  evaluate(ins: EvaluateIns, opts?: ClientCallOptions): Promise<EvaluateRes>;
}

/**
 * A client's reply carried an Error instead of content (the ClientApp raised, could not be
 * loaded, or the SuperLink answered NODE_UNAVAILABLE for a node that went offline).
 */
export class ClientAppError extends FlwrError {
  /** Flower's `ErrorCode` from the reply (3 = NODE_UNAVAILABLE). */
  readonly errorCode: number;
  readonly nodeId: bigint;

  constructor(nodeId: bigint, errorCode: number, reason: string) {
    super(
      "FLWR_CLIENT_APP_ERROR",
      `Message contains an Error (reason: ${reason}). It originated during client-side execution of a message.`,
    );
    this.errorCode = errorCode;
    this.nodeId = nodeId;
  }
}

/** Reaches one SuperNode through the Driver: one message out, wait for its one reply. */
export class DriverClientProxy implements ClientProxy {
  readonly cid: string;

  constructor(
    readonly nodeId: bigint,
    private readonly driver: Driver,
  ) {
    this.cid = nodeId.toString();
  }

  async getProperties(ins: GetPropertiesIns, opts: ClientCallOptions = {}): Promise<GetPropertiesRes> {
    const reply = await this.sendAndReceive(getPropertiesInsToRecordSet(ins), MessageType.GET_PROPERTIES, opts);
    return recordSetToGetPropertiesRes(reply);
  }

  async getParameters(ins: GetParametersIns, opts: ClientCallOptions = {}): Promise<GetParametersRes> {
    const reply = await this.sendAndReceive(getParametersInsToRecordSet(ins), MessageType.GET_PARAMETERS, opts);
    return recordSetToGetParametersRes(reply);
  }

  async fit(ins: FitIns, opts: ClientCallOptions = {}): Promise<FitRes> {
    const reply = await this.sendAndReceive(fitInsToRecordSet(ins), MessageType.TRAIN, opts);
    return recordSetToFitRes(reply);
  }

  async evaluate(ins: EvaluateIns, opts: ClientCallOptions = {}): Promise<EvaluateRes> {
    const reply = await this.sendAndReceive(evaluateInsToRecordSet(ins), MessageType.EVALUATE, opts);
    return recordSetToEvaluateRes(reply);
  }

  private async sendAndReceive(content: RecordSet, messageType: string, opts: ClientCallOptions): Promise<RecordSet> {
    const groupId = opts.groupId ? String(opts.groupId) : "";
    const message = this.driver.createMessage(content, messageType, this.nodeId, groupId, opts.timeoutSeconds);
    const started = Date.now();
    // Shared with the other clients' calls of this round: one push, one pull loop (message-batcher.ts).
    const reply = await batcherFor(this.driver).sendAndReceive(message, {
      timeoutMs: opts.timeoutSeconds === undefined ? undefined : opts.timeoutSeconds * 1000,
      signal: opts.signal,
    });
    if (reply === undefined) {
      opts.signal?.throwIfAborted();
      const elapsed = (Date.now() - started) / 1000;
      if (opts.timeoutSeconds !== undefined && elapsed >= opts.timeoutSeconds) {
        throw new TimeoutError(
          `Timeout reached: node ${this.cid} did not answer "${messageType}" within ${opts.timeoutSeconds} s`,
        );
      }
      throw new NotFoundError(
        `Failed to send message to node ${this.cid}: the SuperLink did not store it (is the run still known to it?)`,
      );
    }
    if (reply.error !== undefined) throw new ClientAppError(this.nodeId, reply.error.code, reply.error.reason);
    if (reply.content === undefined) {
      throw new ClientAppError(this.nodeId, 0, `reply from node ${this.cid} has neither content nor error`);
    }
    return reply.content;
  }
}
