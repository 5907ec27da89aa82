/**
 * Bench child for the `hop` scenario: a gRPC server (startGrpcServer, as the SuperLink's) with
 * one unary method that accepts a payload of any size and answers with this process's CPU time
 * used since the previous call. Logs `{"event":"hop-server.ready","port":P}` on stderr.
 *
 * Usage: node hop-server.js [--tls CA CERT KEY]
 */
import * as grpc from "@grpc/grpc-js";
import { readFileSync } from "node:fs";
import { startGrpcServer } from "../src/transport/grpc-server";
import { serverCredentials } from "../src/transport/tls";
import { enableGrpcExtensions } from "../src/transport/grpc-extensions";
import { HOP_METHOD } from "./lib/hop-method";

async function main(args: string[]): Promise<void> {
  const tls = args[0] === "--tls" ? args.slice(1, 4) : undefined;
  const credentials =
    tls === undefined
      ? grpc.ServerCredentials.createInsecure()
      : serverCredentials({ caCert: readFileSync(tls[0]!), cert: readFileSync(tls[1]!), key: readFileSync(tls[2]!) });
  enableGrpcExtensions();
  let since = process.cpuUsage();
  const server = await startGrpcServer("127.0.0.1:0", credentials, [
    {
      definition: { upload: HOP_METHOD },
      implementation: {
        upload: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
          const used = process.cpuUsage(since);
          since = process.cpuUsage();
          callback(
            null,
            Buffer.from(
              JSON.stringify({ bytes: call.request.length, userMs: used.user / 1000, systemMs: used.system / 1000 }),
            ),
          );
        },
      },
    },
  ]);
  process.stderr.write(JSON.stringify({ event: "hop-server.ready", port: server.port }) + "\n");
  const stop = (): void => void server.close(0).then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`hop-server: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
