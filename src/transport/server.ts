/** Starting and stopping a grpc-js server on HOST:PORT (port 0 allowed). */
import * as grpc from "@grpc/grpc-js";
import { ConnectionError, errorMessage } from "../core/errors";
import { formatAddress, parseAddress } from "../core/address";
import { SERVER_OPTIONS } from "./options";

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
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(formatAddress(hostPort), credentials, (err, boundPort) => {
      if (err) {
        reject(new ConnectionError(`Cannot listen on ${address}: ${errorMessage(err)}`, { cause: err }));
      } else {
        resolve(boundPort);
      }
    });
  });
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
