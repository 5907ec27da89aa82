/** Starting and stopping a grpc-js server on HOST:PORT (port 0 allowed). */
import * as grpc from "@grpc/grpc-js";
import { ConnectionError, errorMessage } from "../core/errors";
import { formatAddress, parseAddress } from "../core/address";
import type { Http2Server, ServerHttp2Session } from "node:http2";
import { SERVER_OPTIONS, SERVER_RECEIVE_WINDOW_BYTES } from "./options";
import { installGrpcZeroCopy } from "./grpc-zero-copy";

export interface ServiceRegistration {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
}

export interface RunningGrpcServer {
  server: grpc.Server;
  /** The bound port (the real one when 0 was requested). */
  port: number;
  /** HOST:PORT with the bound port. */
  address: string;
  /** Stops accepting, waits up to `graceMs` for in-flight calls, then cancels the rest. */
  close(graceMs?: number): Promise<void>;
}

export async function startGrpcServer(
  address: string,
  credentials: grpc.ServerCredentials,
  services: ServiceRegistration[],
  options: grpc.ChannelOptions = {},
): Promise<RunningGrpcServer> {
  const hostPort = parseAddress(address);
  installGrpcZeroCopy();
  const server = new grpc.Server({ ...SERVER_OPTIONS, ...options });
  for (const s of services) server.addService(s.definition, s.implementation);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(formatAddress(hostPort), credentials, (err, boundPort) => {
      if (err) {
        reject(new ConnectionError(`Cannot listen on ${address}: ${errorMessage(err)}`, { cause: err }));
      } else {
        resolve(boundPort);
      }
    });
  });
  enlargeConnectionWindows(server, SERVER_RECEIVE_WINDOW_BYTES);
  let closing: Promise<void> | undefined;
  return {
    server,
    port,
    address: formatAddress({ host: hostPort.host, port }),
    close(graceMs = 0) {
      closing ??= shutdown(server, graceMs);
      return closing;
    },
  };
}

function shutdown(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      server.forceShutdown();
      finish();
    }, graceMs);
    server.tryShutdown(() => finish());
  });
}

/**
 * grpc-js has no server option for the HTTP/2 receive window, and at Node's default of 64 KiB
 * for the whole connection, a large upload (PushTaskIns, PushTaskRes) waits for a window update
 * every 64 KiB: one 100 MB upload took 1.0 s instead of 0.6 s (bench hop). Only the connection
 * window grows; each stream keeps 64 KiB. Node's HTTP/2 stops reading while it writes, so if
 * both peers may have megabytes in flight towards each other at once (our channels already
 * accept 16 MiB per stream), a concurrent upload and download on one connection deadlock;
 * with 64 KiB per upload stream they cannot (test/transport/server-window.test.ts).
 * This reaches into grpc-js 1.14 internals (`http2Servers`); if they are missing the server
 * still works, at the default window, and that test fails.
 */
interface GrpcServerInternals {
  http2Servers?: Map<Http2Server, unknown>;
}

function enlargeConnectionWindows(server: grpc.Server, bytes: number): void {
  const http2Servers = (server as unknown as GrpcServerInternals).http2Servers;
  if (!(http2Servers instanceof Map)) return;
  for (const http2Server of http2Servers.keys()) {
    http2Server.on("session", (session: ServerHttp2Session) => {
      session.once("localSettings", () => {
        if (!session.destroyed) session.setLocalWindowSize(bytes);
      });
    });
  }
}
