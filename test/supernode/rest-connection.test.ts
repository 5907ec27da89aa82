/**
 * RestFleetConnection with the Node poster against real servers on 127.0.0.1:0: how failures
 * are classified by the SuperNode's retry policy (src/transport/retry.ts), which both transports share.
 */
import * as http from "node:http";
import { createServer } from "node:net";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { readServerTlsFiles } from "../../src/transport/tls";
import { type SuperLinkHandle, startSuperLink } from "../../src/superlink/superlink";
import { CallStatus, FleetCallError, statusForHttp } from "../../src/supernode/fleet-transport";
import { createNodeRestPoster } from "../../src/supernode/node-rest-poster";
import { RestFleetConnection } from "../../src/supernode/rest-connection";
import { classifyFleetError } from "../../src/transport/retry";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { memoryLogger } from "./helpers";

let fx: Fixtures;
let other: Fixtures;
let link: SuperLinkHandle;
beforeAll(async () => {
  fx = generateFixtures(1);
  other = generateFixtures(1);
  link = await startSuperLink(
    {
      driverApiAddress: "127.0.0.1:0",
      fleetApiAddress: "127.0.0.1:0",
      database: IN_MEMORY_DATABASE,
      tls: readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey }),
      fleetApiType: "rest",
    },
    { logger: memoryLogger("warn").logger },
  );
});
afterAll(async () => {
  await link?.close(0);
  fx?.cleanup();
  other?.cleanup();
});

const connect = (url: string, ca?: Buffer): RestFleetConnection =>
  new RestFleetConnection({
    baseUrl: url,
    poster: createNodeRestPoster(ca !== undefined ? { rootCertificates: ca } : {}),
  });

async function failureOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("the call succeeded");
}

test("over https with the right CA: register, ping, pull, delete", async () => {
  const c = connect(`https://${link.fleetAddress}`, fx.read(fx.caCert));
  try {
    const node = await c.createNode(30);
    expect(await c.ping(node, 30)).toBe(true);
    expect((await c.pullTaskIns(node)).taskInsList).toEqual([]);
    expect(await c.getRun(12345n)).toBeUndefined();
    await c.deleteNode(node);
    expect(await c.ping(node, 30)).toBe(false);
  } finally {
    c.close();
  }
});

test("a CA that did not sign the certificate is a fatal configuration error", async () => {
  const c = connect(`https://${link.fleetAddress}`, other.read(other.caCert));
  const err = await failureOf(c.createNode(30));
  c.close();
  expect(err).toBeInstanceOf(FleetCallError);
  const verdict = classifyFleetError(err, { what: "CreateNode" });
  expect(verdict.kind).toBe("fatal");
  expect(verdict.kind === "fatal" && (verdict.error as Error).message).toMatch(/TLS certificate verification/);
});

test("https to a plain-HTTP server says the server speaks no TLS; nothing listening is retryable", async () => {
  const plain = http.createServer((_req, res) => res.end());
  await new Promise<void>((r) => plain.listen(0, "127.0.0.1", r));
  const { port } = plain.address() as { port: number };
  const c = connect(`https://127.0.0.1:${port}`);
  const err = await failureOf(c.createNode(30));
  c.close();
  await new Promise<void>((r) => plain.close(() => r()));
  const verdict = classifyFleetError(err, { what: "CreateNode" });
  expect(verdict.kind === "fatal" && (verdict.error as Error).message).toMatch(/does not speak TLS/);

  const closed = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  const refused = connect(`http://127.0.0.1:${closed}`);
  const down = await failureOf(refused.createNode(30));
  refused.close();
  expect((down as FleetCallError).code).toBe(CallStatus.UNAVAILABLE);
  expect(classifyFleetError(down).kind).toBe("retryable");
});

test("deadlines and aborts end a call with DEADLINE_EXCEEDED and CANCELLED", async () => {
  const silent = http.createServer(() => undefined); // never answers
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
  const { port } = silent.address() as { port: number };
  const c = connect(`http://127.0.0.1:${port}`);
  const late = await failureOf(c.ping({ nodeId: 1n, anonymous: false }, 30, { deadlineMs: 200 }));
  expect((late as FleetCallError).code).toBe(CallStatus.DEADLINE_EXCEEDED);
  const controller = new AbortController();
  const pending = failureOf(c.ping({ nodeId: 1n, anonymous: false }, 30, { signal: controller.signal }));
  setTimeout(() => controller.abort(), 100);
  expect(((await pending) as FleetCallError).code).toBe(CallStatus.CANCELLED);
  c.close();
  silent.closeAllConnections();
  await new Promise<void>((r) => silent.close(() => r()));
});

test("HTTP statuses map to the gRPC statuses the retry policy knows", () => {
  expect(statusForHttp(401)).toBe(CallStatus.UNAUTHENTICATED);
  expect(statusForHttp(403)).toBe(CallStatus.UNAUTHENTICATED);
  expect(statusForHttp(413)).toBe(CallStatus.INVALID_ARGUMENT);
  expect(statusForHttp(404)).toBe(CallStatus.NOT_FOUND);
  expect(statusForHttp(503)).toBe(CallStatus.UNAVAILABLE);
  expect(classifyFleetError(new FleetCallError(statusForHttp(502), "HTTP 502")).kind).toBe("retryable");
  expect(classifyFleetError(new FleetCallError(statusForHttp(401), "HTTP 401")).kind).toBe("fatal");
});
