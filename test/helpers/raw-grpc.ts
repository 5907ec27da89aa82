/**
 * Pieces of a gRPC request written by hand over node:http2, for tests that send what no gRPC
 * client would (a declared size with no body, a stalled upload, a call held open).
 */
import type * as http2 from "node:http2";

/** The request headers of a gRPC call to `path`, plus `extra` (metadata). */
export function grpcRequestHeaders(path: string, extra: Record<string, string> = {}): http2.OutgoingHttpHeaders {
  return { ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...extra };
}

/** The 5-byte frame header of a gRPC message declaring `declared` bytes. */
export function grpcFrameHeader(declared: number, compressed = false): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt8(compressed ? 1 : 0, 0);
  header.writeUInt32BE(declared, 1);
  return header;
}
