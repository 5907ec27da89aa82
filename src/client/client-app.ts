/**
 * `ClientApp`: what a SuperNode runs for every message it receives (Flower's
 * `flwr.client.ClientApp`). Two styles, as in Flower 1.10:
 *
 * - legacy: `new ClientApp({ clientFn })`, where `clientFn(context, cid)` returns a `Client` or a
 *   `NumPyClient`; the four legacy message types (get_parameters, get_properties, train,
 *   evaluate) are converted with the exact RecordSet keys of docs/protocol.md, "Legacy records";
 * - Message API: `new ClientApp()` then `app.train(fn)`, `app.evaluate(fn)`, `app.query(fn)`,
 *   each `fn(message, context)` returning the reply Message (build it with `createReply`).
 *
 * `handle()` never rejects: whatever the user code throws becomes an error reply with code 2
 * (CLIENT_APP_RAISED_EXCEPTION) and Flower's reason text, so a bad message cannot stop a node.
 */
import { ErrorCode, MessageType } from "../core/constants";
import { InvalidConfigError } from "../core/errors";
import type { Logger } from "../core/logger";
import {
  evaluateResToRecordSet,
  fitResToRecordSet,
  getParametersResToRecordSet,
  getPropertiesResToRecordSet,
  recordSetToEvaluateIns,
  recordSetToFitIns,
  recordSetToGetParametersIns,
  recordSetToGetPropertiesIns,
} from "../core/records/compat";
import { createReply } from "../core/records/serde";
import type { Context, Message, MessageError, RecordSet } from "../core/records/types";
import { type Client, maybeCallEvaluate, maybeCallFit, maybeCallGetParameters, maybeCallGetProperties } from "./client";
import { type NumPyClient, isNumPyClient } from "./numpy-client";

const kClientApp = Symbol.for("flwr-ts.ClientApp");

/**
 * Builds the client for one message. `cid` is Flower's legacy client id:
 * `context.nodeConfig["partition-id"]` when set, else the node id, as a decimal string.
 */
export type ClientFn = (context: Context, cid: string) => Client | NumPyClient | Promise<Client | NumPyClient>;

/** A Message-API handler: gets the incoming message and the run context, returns the reply. */
export type MessageHandler = (message: Message, context: Context) => Message | Promise<Message>;

export interface ClientAppOptions {
  /** Legacy style: the client factory. Cannot be combined with train/evaluate/query handlers. */
  clientFn?: ClientFn;
}

export interface HandleOptions {
  /** Receives "ClientApp raised an exception" errors (with the stack); default: none. */
  logger?: Logger;
}

/** Flower raises ValueError for these; the same class name keeps the error reason identical. */
class ValueError extends Error {
  override readonly name = "ValueError";
}

/**
 * Flower's reason text for an exception raised by a ClientApp:
 * `<class 'TypeError'>:<'message'>` (docs/protocol.md, "Error replies"), using the JS error class name.
 */
export function exceptionReason(err: unknown): string {
  let name: string;
  let message: string;
  if (err instanceof Error) {
    const ctorName = (err as { constructor?: { name?: unknown } }).constructor?.name;
    name = typeof ctorName === "string" && ctorName !== "" && ctorName !== "Object" ? ctorName : err.name;
    message = err.message;
  } else {
    name = typeof err;
    message = String(err);
  }
  return `<class '${name}'>:<'${message}'>`;
}

export class ClientApp {
  private readonly clientFn: ClientFn | undefined;
  private trainHandler: MessageHandler | undefined;
  private evaluateHandler: MessageHandler | undefined;
  private queryHandler: MessageHandler | undefined;

  constructor(options: ClientAppOptions = {}) {
    if (options.clientFn !== undefined && typeof options.clientFn !== "function") {
      throw new InvalidConfigError("ClientApp: `clientFn` must be a function (context, cid) => Client | NumPyClient");
    }
    this.clientFn = options.clientFn;
    Object.defineProperty(this, kClientApp, { value: true });
  }

  /** True for a ClientApp, also one created by another loaded copy of this package. */
  static isClientApp(value: unknown): value is ClientApp {
    return (
      typeof value === "object" &&
      value !== null &&
      (value as Record<symbol, unknown>)[kClientApp] === true &&
      typeof (value as { handle?: unknown }).handle === "function"
    );
  }

  /** Registers the handler for "train" messages. Returns the app, for chaining. */
  train(handler: MessageHandler): this {
    this.trainHandler = this.checkRegistration(MessageType.TRAIN, handler);
    return this;
  }

  /** Registers the handler for "evaluate" messages. Returns the app, for chaining. */
  evaluate(handler: MessageHandler): this {
    this.evaluateHandler = this.checkRegistration(MessageType.EVALUATE, handler);
    return this;
  }

  /** Registers the handler for "query" messages. Returns the app, for chaining. */
  query(handler: MessageHandler): this {
    this.queryHandler = this.checkRegistration(MessageType.QUERY, handler);
    return this;
  }

  /**
   * Runs the app on one message and returns the reply. Rejects with whatever the user code
   * threw (Flower's `ClientApp.__call__`); use `handle` for the never-failing variant.
   */
  async call(message: Message, context: Context): Promise<Message> {
    const messageType = message.metadata.messageType;
    if (this.clientFn !== undefined) return this.handleLegacy(this.clientFn, message, context);
    let handler: MessageHandler | undefined;
    switch (messageType) {
      case MessageType.TRAIN:
        handler = this.trainHandler;
        break;
      case MessageType.EVALUATE:
        handler = this.evaluateHandler;
        break;
      case MessageType.QUERY:
        handler = this.queryHandler;
        break;
      default:
        throw new ValueError(`Unknown message_type: ${messageType}`);
    }
    if (handler === undefined) throw new ValueError(`No \`${messageType}\` function registered`);
    const reply: unknown = await handler(message, context);
    if (!isMessage(reply)) {
      throw new TypeError(
        `The \`${messageType}\` handler must return a Message (build it with createReply(message, content))`,
      );
    }
    return reply;
  }

  /**
   * Runs the app on one message and always resolves with a reply: the app's own, or an error
   * reply `{code: 2, reason: "<class 'X'>:<'message'>"}` if the user code threw.
   */
  async handle(message: Message, context: Context, options: HandleOptions = {}): Promise<Message> {
    try {
      return await this.call(message, context);
    } catch (err) {
      options.logger?.error({ err, messageType: message.metadata.messageType }, "ClientApp raised an exception");
      const error: MessageError = { code: ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason: exceptionReason(err) };
      return createReply(message, error);
    }
  }

  private checkRegistration(messageType: string, handler: MessageHandler): MessageHandler {
    if (this.clientFn !== undefined) {
      throw new InvalidConfigError(
        `Use either \`app.${messageType}(handler)\` or \`clientFn\`, but not both: ` +
          `this ClientApp was created with a clientFn.`,
      );
    }
    if (typeof handler !== "function") {
      throw new InvalidConfigError(
        `app.${messageType}(handler): the handler must be a function (message, context) => Message`,
      );
    }
    return handler;
  }

  /** Flower's `handle_legacy_message_from_msgtype`. */
  private async handleLegacy(clientFn: ClientFn, message: Message, context: Context): Promise<Message> {
    const partitionId = context.nodeConfig["partition-id"];
    const cid = String(partitionId ?? context.nodeId);
    const made: unknown = await clientFn(context, cid);
    if (typeof made !== "object" || made === null) {
      throw new TypeError("clientFn must return a Client or a NumPyClient");
    }
    const client: Client = isNumPyClient(made) ? made.toClient() : made;
    client.setContext?.(context);

    const messageType = message.metadata.messageType;
    const content = message.content;
    if (content === undefined) throw new ValueError(`The ${messageType} message carries no content`);
    let out: RecordSet;
    switch (messageType) {
      case MessageType.GET_PROPERTIES:
        out = getPropertiesResToRecordSet(await maybeCallGetProperties(client, recordSetToGetPropertiesIns(content)));
        break;
      case MessageType.GET_PARAMETERS:
        out = getParametersResToRecordSet(await maybeCallGetParameters(client, recordSetToGetParametersIns(content)));
        break;
      case MessageType.TRAIN:
        out = fitResToRecordSet(await maybeCallFit(client, recordSetToFitIns(content)));
        break;
      case MessageType.EVALUATE:
        out = evaluateResToRecordSet(await maybeCallEvaluate(client, recordSetToEvaluateIns(content)));
        break;
      default:
        throw new ValueError(`Invalid message type: ${messageType}`);
    }
    return createReply(message, out);
  }
}

function isMessage(value: unknown): value is Message {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { metadata?: unknown }).metadata === "object" &&
    (value as { metadata?: unknown }).metadata !== null
  );
}
