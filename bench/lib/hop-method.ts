/** The one method of the `hop` scenario, shared by the bench (client) and bench/hop-server.ts. */
import type * as grpc from "@grpc/grpc-js";
import { gatherRequestSerializer } from "../../src/transport/grpc-zero-copy";

/**
 * Raw bytes in, JSON out: no protobuf, so the numbers are the transport's alone. The request is
 * sent as our clients send large messages (one chunk, not copied; src/transport/grpc-zero-copy).
 */
export const HOP_METHOD: grpc.MethodDefinition<Buffer, Buffer> = {
  path: "/flwr_bench.Hop/Upload",
  requestStream: false,
  responseStream: false,
  requestSerialize: gatherRequestSerializer((b) => ({ chunks: [b as Buffer], length: (b as Buffer).length })),
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
};
