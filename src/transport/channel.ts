/** Client construction for the Fleet and Driver APIs. */
import * as grpc from "@grpc/grpc-js";
import { CHANNEL_OPTIONS } from "./options";

/**
 * Creates a generated ts-proto client (`FleetClient`, `DriverClient`) with Flower's channel
 * options. `target` is HOST:PORT; with TLS, use a host name or IP the certificate covers.
 */
export function createClient<C extends grpc.Client>(
  ClientCtor: new (address: string, credentials: grpc.ChannelCredentials, options?: Partial<grpc.ChannelOptions>) => C,
  target: string,
  credentials: grpc.ChannelCredentials,
  options: Partial<grpc.ChannelOptions> = {},
): C {
  return new ClientCtor(target, credentials, { ...CHANNEL_OPTIONS, ...options });
}

/** Calls a unary method and resolves with the response and the server's initial metadata. */
export function unaryCall<Req, Res>(
  invoke: (
    request: Req,
    metadata: grpc.Metadata,
    options: Partial<grpc.CallOptions>,
    callback: (err: grpc.ServiceError | null, response: Res) => void,
  ) => grpc.ClientUnaryCall,
  request: Req,
  metadata: grpc.Metadata = new grpc.Metadata(),
  options: Partial<grpc.CallOptions> = {},
): Promise<{ response: Res; headers: grpc.Metadata }> {
  return new Promise((resolve, reject) => {
    let headers = new grpc.Metadata();
    const call = invoke(request, metadata, options, (err, response) => {
      if (err) reject(err);
      else resolve({ response, headers });
    });
    call.on("metadata", (md: grpc.Metadata) => {
      headers = md;
    });
  });
}
