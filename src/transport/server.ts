/** Starting and stopping a grpc-js server on HOST:PORT (port 0 allowed). */
import * as grpc from "@grpc/grpc-js";
import { ConnectionError, errorMessage } from "../core/errors";
import { formatAddress, parseAddress } from "../core/address";
import type { Http2Server, ServerHttp2Session, Settings } from "node:http2";
import { SERVER_OPTIONS, SERVER_RECEIVE_WINDOW_BYTES } from "./options";

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
  const server = new grpc.Server({ ...SERVER_OPTIONS, ...options });
  for (const s of services) server.addService(s.definition, s.implementation);
  advertiseReceiveWindow(server, SERVER_RECEIVE_WINDOW_BYTES);
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
 * grpc-js has no server option for the HTTP/2 receive window, and at Node's default (64 KiB per
 * stream and per connection) a large upload (PushTaskIns, PushTaskRes) waits for a window update
 * every 64 KiB: pushing 2 x 100 MB took 3.4 s instead of 2.1 s (bench relay). These two reach
 * into grpc-js 1.14 internals (`commonServerOptions`, `http2Servers`). If those are missing the
 * server still works, at the default window, and test/transport/server-window.test.ts fails.
 */
interface GrpcServerInternals {
  commonServerOptions?: { settings?: Settings };
  http2Servers?: Map<Http2Server, unknown>;
}

function advertiseReceiveWindow(server: grpc.Server, bytes: number): void {
  const internals = server as unknown as GrpcServerInternals;
  if (internals.commonServerOptions === undefined) return;
  internals.commonServerOptions.settings = { ...internals.commonServerOptions.settings, initialWindowSize: bytes };
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
