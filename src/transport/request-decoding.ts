/**
 * Undecodable requests answered with INVALID_ARGUMENT. grpc-js answers a request whose
 * deserializer throws with INTERNAL "Error deserializing request", which says "our fault" for
 * what is the caller's. Here a failing deserializer returns a marker instead, and a server
 * interceptor answers the marker with INVALID_ARGUMENT before any handler (authentication
 * included) sees it. The generated decoders are strict (scripts/strict-decoding.js).
 */
import * as grpc from "@grpc/grpc-js";
import { errorMessage } from "../core/errors";
import { truncateEcho } from "../core/logger";

const kMalformed = Symbol("flwr.malformedRequest");

/** What a wrapped deserializer returns for bytes that do not decode. */
interface MalformedRequest {
  readonly [kMalformed]: string;
}

function isMalformed(message: unknown): message is MalformedRequest {
  return typeof message === "object" && message !== null && kMalformed in message;
}

/** A copy of `definition` whose request deserializers return a marker instead of throwing. */
export function withMalformedRequestsMarked<D extends grpc.ServiceDefinition>(definition: D): D {
  const result: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const [name, method] of Object.entries(definition) as [string, grpc.MethodDefinition<object, object>][]) {
    const deserialize = method.requestDeserialize;
    result[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): object => {
        try {
          return deserialize(bytes);
        } catch (err) {
          const marker: MalformedRequest = { [kMalformed]: truncateEcho(errorMessage(err)) };
          return marker;
        }
      },
    };
  }
  return result as unknown as D;
}

/**
 * Server interceptor: a marked request ends the call with INVALID_ARGUMENT (the message names
 * the method and the decoding problem); everything else passes through untouched.
 */
export function rejectMalformedRequests(): grpc.ServerInterceptor {
  return (method, call) => {
    let rejected = false;
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMessage((message, next) => {
        if (!isMalformed(message)) {
          next(message);
          return;
        }
        rejected = true;
        const name = method.path.slice(method.path.lastIndexOf("/") + 1);
        call.sendStatus({
          code: grpc.status.INVALID_ARGUMENT,
          details: `Malformed ${name} request: ${message[kMalformed]}`,
          metadata: new grpc.Metadata(),
        });
      })
      // The handler never saw a message; it must not answer the half-close with its own status.
      .withOnReceiveHalfClose((next) => {
        if (!rejected) next();
      })
      .build();
    const responder = new grpc.ResponderBuilder().withStart((next) => next(listener)).build();
    return new grpc.ServerInterceptingCall(call, responder);
  };
}
