/** The one method of the `hop` scenario, shared by the bench (client) and bench/hop-server.ts. */
import type * as grpc from "@grpc/grpc-js";

/** Raw bytes in, JSON out: no protobuf, so the numbers are the transport's alone. */
export const HOP_METHOD: grpc.MethodDefinition<Buffer, Buffer> = {
  path: "/flwr_bench.Hop/Upload",
  requestStream: false,
  responseStream: false,
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
};
