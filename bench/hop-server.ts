/**
 * Bench child for the `hop` scenario: a gRPC server (startGrpcServer, as the SuperLink's) with
 * one unary method that accepts a payload of any size and answers with this process's CPU time
 * used since the previous call. Logs `{"event":"hop-server.ready","port":P}` on stderr.
 *
 * With `--node-http2`, a bare node:http2 server instead (no grpc-js, none of our code): each
 * POST's body is copied into one buffer of its content-length as it arrives (what our decoder
 * does) and answered with the same JSON. Same windows as our servers (16 MiB for the
 * connection, Node's 64 KiB per stream). It shows what Node's own HTTP/2 and TLS cost.
 *
 * Usage: node hop-server.js [--node-http2] [--tls CA CERT KEY]
 */
import * as grpc from "@grpc/grpc-js";
import { readFileSync } from "node:fs";
import * as http2 from "node:http2";
import { startGrpcServer } from "../src/transport/grpc-server";
import { serverCredentials } from "../src/transport/tls";
import { enableGrpcExtensions } from "../src/transport/grpc-extensions";
import { SERVER_RECEIVE_WINDOW_BYTES } from "../src/transport/options";
import { HOP_METHOD } from "./lib/hop-method";

interface TlsFiles {
  caCert: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** CPU used since the previous call, as the JSON reply of both servers. */
function cpuReporter(): (bytes: number) => Buffer {
  let since = process.cpuUsage();
  return (bytes) => {
    const used = process.cpuUsage(since);
    since = process.cpuUsage();
    return Buffer.from(JSON.stringify({ bytes, userMs: used.user / 1000, systemMs: used.system / 1000 }));
  };
}

async function startGrpcHop(tls: TlsFiles | undefined): Promise<{ port: number; close: () => Promise<void> }> {
  const credentials = tls === undefined ? grpc.ServerCredentials.createInsecure() : serverCredentials(tls);
  enableGrpcExtensions();
  const report = cpuReporter();
  const server = await startGrpcServer("127.0.0.1:0", credentials, [
    {
      definition: { upload: HOP_METHOD },
      implementation: {
        upload: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
          callback(null, report(call.request.length));
        },
      },
    },
  ]);
  return { port: server.port, close: () => server.close(0) };
}

async function startNodeHttp2Hop(tls: TlsFiles | undefined): Promise<{ port: number; close: () => Promise<void> }> {
  const server =
    tls === undefined
      ? http2.createServer()
      : // As our servers: the handshake sends the certificate file's chain, not the CA.
        http2.createSecureServer({ cert: tls.cert, key: tls.key });
  const report = cpuReporter();
  server.on("session", (session) => {
    session.once("localSettings", () => {
      if (!session.destroyed) session.setLocalWindowSize(SERVER_RECEIVE_WINDOW_BYTES);
    });
  });
  server.on("stream", (stream, headers) => {
    const body = Buffer.allocUnsafe(Number(headers["content-length"] ?? 0));
    let filled = 0;
    stream.on("data", (chunk: Buffer) => {
      filled += chunk.copy(body, filled);
    });
    stream.on("end", () => {
      stream.respond({ ":status": 200 });
      stream.end(report(filled));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("hop-server: no port");
  return { port: address.port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

async function main(args: string[]): Promise<void> {
  const nodeHttp2 = args[0] === "--node-http2";
  const rest = nodeHttp2 ? args.slice(1) : args;
  const files = rest[0] === "--tls" ? rest.slice(1, 4) : undefined;
  const tls =
    files === undefined
      ? undefined
      : { caCert: readFileSync(files[0]!), cert: readFileSync(files[1]!), key: readFileSync(files[2]!) };
  const server = nodeHttp2 ? await startNodeHttp2Hop(tls) : await startGrpcHop(tls);
  process.stderr.write(JSON.stringify({ event: "hop-server.ready", port: server.port }) + "\n");
  const stop = (): void => void server.close().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`hop-server: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
