/**
 * Our gRPC servers grow the HTTP/2 receive window of each connection (WINDOW_UPDATE) so uploads
 * such as PushTaskIns/PushTaskRes are not paced at Node's 64 KiB default, and keep each
 * stream's at 64 KiB so that a large upload and a large download on one connection cannot
 * deadlock (Node's HTTP/2 stops reading while it writes). grpc-js has no option for the
 * window (see src/transport/grpc-server.ts); the first tests fail if a grpc-js upgrade moves the
 * internals it relies on.
 */
import * as grpc from "@grpc/grpc-js";
import type { EventEmitter } from "node:events";
import { connect, type ClientHttp2Session } from "node:http2";
import { join } from "node:path";
import { SERVER_RECEIVE_WINDOW_BYTES } from "../../src/transport/options";
import { type RunningGrpcServer, releaseAlpnCopy, startGrpcServer } from "../../src/transport/grpc-server";
import { serverCredentials } from "../../src/transport/tls";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { runNodeScript } from "../helpers/node-script";
import { grpcRequestHeaders } from "../helpers/raw-grpc";

const NODE_DEFAULT_WINDOW = 65_535;

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

async function windowsSeenByClient(
  url: string,
  options: Parameters<typeof connect>[1],
): Promise<{ stream: number; connection: number }> {
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
  return {
    stream: settings.initialWindowSize ?? NODE_DEFAULT_WINDOW,
    connection: session.state.remoteWindowSize ?? -1,
  };
}

function tlsCredentials(): grpc.ServerCredentials {
  return serverCredentials({ caCert: fx.read(fx.caCert), cert: fx.read(fx.serverCert), key: fx.read(fx.serverKey) });
}

describe("startGrpcServer receive window", () => {
  it("is SERVER_RECEIVE_WINDOW_BYTES per connection and the default per stream (plaintext)", async () => {
    const server = await startGrpcServer("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), []);
    servers.push(server);
    expect(SERVER_RECEIVE_WINDOW_BYTES).toBeGreaterThan(NODE_DEFAULT_WINDOW);
    expect(await windowsSeenByClient(`http://${server.address}`, {})).toEqual({
      stream: NODE_DEFAULT_WINDOW,
      connection: SERVER_RECEIVE_WINDOW_BYTES,
    });
  });

  it("is the same over TLS", async () => {
    const server = await startGrpcServer("127.0.0.1:0", tlsCredentials(), []);
    servers.push(server);
    expect(
      await windowsSeenByClient(`https://localhost:${server.port}`, { ca: fx.read(fx.caCert), ALPNProtocols: ["h2"] }),
    ).toEqual({
      stream: NODE_DEFAULT_WINDOW,
      connection: SERVER_RECEIVE_WINDOW_BYTES,
    });
  });

  it("lets a 20 MB upload and a 20 MB download share one TLS connection without deadlock", async () => {
    // In a child process (the built dist/, as the e2e tests use): a deadlocked HTTP/2 session
    // never closes, and would keep jest from exiting.
    const script = `
      const grpc = require("@grpc/grpc-js");
      const fs = require("node:fs");
      // As the daemons do: the server's window settings are part of the grpc-js extensions.
      require(${JSON.stringify(join(REPO_ROOT, "dist", "transport", "grpc-extensions.js"))}).enableGrpcExtensions();
      const { startGrpcServer } = require(${JSON.stringify(join(REPO_ROOT, "dist", "transport", "grpc-server.js"))});
      const { CHANNEL_OPTIONS } = require(${JSON.stringify(join(REPO_ROOT, "dist", "transport", "options.js"))});
      const [ca, cert, key] = process.argv.slice(1).map((f) => fs.readFileSync(f));
      const raw = (path) => ({ path, requestStream: false, responseStream: false,
        requestSerialize: (b) => b, requestDeserialize: (b) => b, responseSerialize: (b) => b, responseDeserialize: (b) => b });
      const definition = { upload: raw("/t.Window/Upload"), download: raw("/t.Window/Download") };
      const size = 20000000;
      (async () => {
        const server = await startGrpcServer("127.0.0.1:0", grpc.ServerCredentials.createSsl(ca, [{ private_key: key, cert_chain: cert }], false), [{
          definition,
          implementation: {
            upload: (call, cb) => cb(null, Buffer.from(String(call.request.length))),
            download: (_call, cb) => cb(null, Buffer.alloc(size, 2)),
          },
        }]);
        const Client = grpc.makeGenericClientConstructor(definition, "Window");
        const client = new Client("localhost:" + server.port, grpc.credentials.createSsl(ca), CHANNEL_OPTIONS);
        const call = (m, body) => new Promise((ok, fail) => client[m](body, (e, r) => (e ? fail(e) : ok(r))));
        const [up, down] = await Promise.all([call("upload", Buffer.alloc(size, 1)), call("download", Buffer.alloc(1))]);
        console.log(JSON.stringify({ uploaded: up.toString(), downloaded: down.length }));
        process.exit(0);
      })().catch((e) => { console.error(e); process.exit(1); });
    `;
    const run = await runNodeScript(script, [fx.caCert, fx.serverCert, fx.serverKey], 30_000);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" }); // killed (code null) = stalled 30 s: deadlock
    expect(JSON.parse(run.stdout)).toEqual({ uploaded: "20000000", downloaded: 20_000_000 });
  });
});

describe("accepted TLS sockets", () => {
  it("share the server's ALPN list once the handshake is done, and later handshakes still negotiate h2", async () => {
    // Node copies the ALPN list into every accepted socket's options (a small Buffer that pinned
    // an 8 KiB pool slab per few idle connections); startGrpcServer points them back at the server's.
    const server = await startGrpcServer("127.0.0.1:0", tlsCredentials(), []);
    servers.push(server);
    const http2Server = [
      ...(server.server as unknown as { http2Servers: Map<object, unknown> }).http2Servers.keys(),
    ][0];
    const shared = (http2Server as { ALPNProtocols?: Buffer }).ALPNProtocols;
    expect(Buffer.isBuffer(shared)).toBe(true);
    const sharedBytes = Buffer.from(shared!);
    for (let i = 0; i < 2; i++) {
      const accepted = new Promise<{ ALPNProtocols?: unknown; alpnProtocol: unknown }>((resolve) => {
        // Registered after startGrpcServer's own listener, so it runs after it.
        (http2Server as EventEmitter).once("secureConnection", (socket: object) => {
          const tls = socket as { _tlsOptions?: { ALPNProtocols?: unknown }; alpnProtocol?: unknown };
          resolve({ ALPNProtocols: tls._tlsOptions?.ALPNProtocols, alpnProtocol: tls.alpnProtocol });
        });
      });
      const session = connect(`https://localhost:${server.port}`, { ca: fx.read(fx.caCert), ALPNProtocols: ["h2"] });
      sessions.push(session);
      await new Promise<void>((resolve, reject) => {
        session.once("remoteSettings", () => resolve());
        session.once("error", reject);
      });
      const seen = await accepted;
      expect(seen.ALPNProtocols).toBe(shared);
      expect(seen.alpnProtocol).toBe("h2");
      expect(session.alpnProtocol).toBe("h2");
    }
    // The server's own list is untouched.
    expect(shared).toEqual(sharedBytes);
  });

  it("leave a socket without Node's field, or with something else in it, as it is", () => {
    const shared = Buffer.from([2, 0x68, 0x32]);
    const bare = {};
    releaseAlpnCopy(bare, shared);
    expect(bare).toEqual({});
    const empty = { _tlsOptions: {} };
    releaseAlpnCopy(empty, shared);
    expect(empty).toEqual({ _tlsOptions: {} });
    const list = { _tlsOptions: { ALPNProtocols: ["h2"] } };
    releaseAlpnCopy(list, shared);
    expect(list._tlsOptions.ALPNProtocols).toEqual(["h2"]);
    const copy = { _tlsOptions: { ALPNProtocols: Buffer.from(shared) } };
    releaseAlpnCopy(copy, shared);
    expect(copy._tlsOptions.ALPNProtocols).toBe(shared);
  });
});

/** A bidi method that never answers nor ends: only the server's close can end its calls. */
const HOLD: grpc.ServiceDefinition = {
  hold: {
    path: "/test.Hold/Hold",
    requestStream: true,
    responseStream: true,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};

describe("closing a server", () => {
  // grpc-js's forceShutdown finds sessions only with channelz on; ours is off.
  it.each([0, 200])("ends the connections it still has, with a call open (grace %i ms)", async (graceMs) => {
    const server = await startGrpcServer("127.0.0.1:0", tlsCredentials(), [
      { definition: HOLD, implementation: { hold: () => undefined } },
    ]);
    const session = connect(`https://localhost:${server.port}`, { ca: fx.read(fx.caCert), ALPNProtocols: ["h2"] });
    sessions.push(session);
    session.on("error", () => undefined);
    const stream = session.request(grpcRequestHeaders("/test.Hold/Hold"));
    stream.on("error", () => undefined);
    const headers = new Promise((resolve) => stream.once("response", resolve));
    stream.write(Buffer.from([0, 0, 0, 0, 1, 7]));
    const closed = new Promise<boolean>((resolve) => {
      session.once("close", () => resolve(true));
      setTimeout(() => resolve(false), 10_000).unref();
    });
    await Promise.race([headers, new Promise((r) => setTimeout(r, 200))]);
    await server.close(graceMs);
    expect(await closed).toBe(true);
  });
});
