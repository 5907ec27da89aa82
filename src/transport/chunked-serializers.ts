/**
 * Service definitions whose serializers for large messages use the chunked encoder (with
 * grpc-zero-copy, no copy of the payload bytes at all; otherwise one, instead of about a
 * dozen), with the same bytes on the wire. Works for servers (`responseSerialize`) and for
 * clients made with `makeGenericClientConstructor` (`requestSerialize`).
 */
import type * as grpc from "@grpc/grpc-js";
import {
  type EncodedChunks,
  type MessageEncoder,
  encodeMessage,
  encodeMessageChunks,
} from "../core/wire/chunked-writer";
import { encodePullTaskInsResponseChunks } from "../core/wire/deferred-recordset";
import { gatherRequestSerializer, withGather } from "./grpc-zero-copy";
import { PullTaskResResponse, PushTaskInsRequest } from "../proto/flwr/proto/driver";
import { PullTaskInsResponse, PushTaskResRequest } from "../proto/flwr/proto/fleet";

export interface ChunkedSerializerChoice {
  /** Method name -> encoder of its request message (used by clients). */
  requests?: Record<string, MessageEncoder<object>>;
  /** Method name -> encoder of its response message (used by servers). */
  responses?: Record<string, MessageEncoder<object>>;
  /** Method name -> the gather form of its response's encoder, when not `encodeMessageChunks`. */
  responseChunks?: Record<string, (value: object) => EncodedChunks>;
}

/**
 * The messages of each API that carry tasks, and so possibly large records: the ones worth the
 * chunked encoder. Servers use the responses, clients the requests.
 */
export const DRIVER_TASK_MESSAGES: ChunkedSerializerChoice = {
  requests: { pushTaskIns: PushTaskInsRequest },
  responses: { pullTaskRes: PullTaskResResponse },
};
export const FLEET_TASK_MESSAGES: ChunkedSerializerChoice = {
  requests: { pushTaskRes: PushTaskResRequest },
  responses: { pullTaskIns: PullTaskInsResponse },
  // A spilled broadcast is read from disk as it is written (src/core/wire/deferred-recordset.ts).
  responseChunks: { pullTaskIns: encodePullTaskInsResponseChunks as (value: object) => EncodedChunks },
};

/**
 * A copy of `definition` in which the named methods serialize with the chunked encoder; every
 * other field (paths, deserializers, streaming flags) is kept. The input is not modified. Throws
 * if a named method is not in the definition, so a renamed method cannot silently fall back.
 * A request serializer's output is for grpc-js only (a stand-in with the client patches):
 * `requestBytes` turns it into the bytes.
 */
export function withChunkedSerializers<D extends grpc.ServiceDefinition>(
  definition: D,
  choice: ChunkedSerializerChoice,
): D {
  const result: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const [name, method] of Object.entries(definition)) {
    result[name] = { ...(method as grpc.MethodDefinition<object, object>) };
  }
  const pick = (name: string): grpc.MethodDefinition<object, object> => {
    const method = result[name];
    if (method === undefined) throw new Error(`withChunkedSerializers: no method "${name}" in the service definition`);
    return method;
  };
  for (const [name, encoder] of Object.entries(choice.requests ?? {})) {
    // Patched clients write the request as chunks that reference the payload (no copy).
    pick(name).requestSerialize = gatherRequestSerializer((value) => encodeMessageChunks(encoder, value));
  }
  for (const [name, encoder] of Object.entries(choice.responses ?? {})) {
    // Patched servers write the response as chunks that reference the payload (no copy).
    pick(name).responseSerialize = withGather(
      (value) => encodeMessage(encoder, value),
      choice.responseChunks?.[name] ?? ((value) => encodeMessageChunks(encoder, value)),
    );
  }
  return result as unknown as D;
}
