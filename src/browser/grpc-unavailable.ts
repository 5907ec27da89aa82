/**
 * Stands in for @grpc/grpc-js in the browser bundle, for the generated files in src/proto/ only
 * (scripts/build-browser.js): they define gRPC service clients beside the messages, and a page
 * uses only the messages. Constructing a client throws.
 */
// eslint-disable-next-line @typescript-eslint/no-extraneous-class -- stands in for grpc-js's Client class
export class Client {
  constructor() {
    throw new Error("gRPC is not available in a browser; the browser SuperNode uses the REST Fleet API");
  }
}

export function makeGenericClientConstructor(): typeof Client {
  return Client;
}
