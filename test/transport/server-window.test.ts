/**
 * Our gRPC servers advertise a large HTTP/2 receive window, per stream (SETTINGS) and per
 * connection (WINDOW_UPDATE), so uploads such as PushTaskIns/PushTaskRes are not paced at
 * Node's 64 KiB default. grpc-js has no option for it (see src/transport/server.ts); this test
 * fails if a grpc-js upgrade moves the internals it relies on.
 */
import * as grpc from "@grpc/grpc-js";
import { connect, type ClientHttp2Session } from "node:http2";
import { SERVER_RECEIVE_WINDOW_BYTES } from "../../src/transport/options";
import { type RunningGrpcServer, startGrpcServer } from "../../src/transport/server";
import { serverCredentials } from "../../src/transport/tls";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";

let fx: Fixtures;
const servers: RunningGrpcServer[] = [];
const sessions: ClientHttp2Session[] = [];

beforeAll(() => {
  fx = generateFixtures(1);
});
afterAll(() => fx.cleanup());
afterEach(async () => {
  for (const s of sessions.splice(0)) s.destroy();
  for (const s of servers.splice(0)) await s.close(0);
});

async function windowsSeenByClient(url: string, options: Parameters<typeof connect>[1]): Promise<{ stream: number; connection: number }> {
  const session = connect(url, options);
  sessions.push(session);
  const settings = await new Promise<{ initialWindowSize?: number }>((resolve, reject) => {
    session.once("remoteSettings", resolve);
    session.once("error", reject);
  });
  // The connection window grows by a WINDOW_UPDATE that follows the SETTINGS.
  const until = Date.now() + 5_000;
  while (session.state.remoteWindowSize !== SERVER_RECEIVE_WINDOW_BYTES && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 10));
  }
  return { stream: settings.initialWindowSize ?? -1, connection: session.state.remoteWindowSize ?? -1 };
}

describe("startGrpcServer receive window", () => {
  it("is SERVER_RECEIVE_WINDOW_BYTES per stream and per connection (plaintext)", async () => {
    const server = await startGrpcServer("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), []);
    servers.push(server);
    expect(SERVER_RECEIVE_WINDOW_BYTES).toBeGreaterThan(65_535);
    expect(await windowsSeenByClient(`http://${server.address}`, {})).toEqual({
      stream: SERVER_RECEIVE_WINDOW_BYTES,
      connection: SERVER_RECEIVE_WINDOW_BYTES,
    });
  });

  it("is the same over TLS", async () => {
    const creds = serverCredentials({ caCert: fx.read(fx.caCert), cert: fx.read(fx.serverCert), key: fx.read(fx.serverKey) });
    const server = await startGrpcServer("127.0.0.1:0", creds, []);
    servers.push(server);
    const url = `https://localhost:${server.port}`;
    expect(await windowsSeenByClient(url, { ca: fx.read(fx.caCert), ALPNProtocols: ["h2"] })).toEqual({
      stream: SERVER_RECEIVE_WINDOW_BYTES,
      connection: SERVER_RECEIVE_WINDOW_BYTES,
    });
  });
});
