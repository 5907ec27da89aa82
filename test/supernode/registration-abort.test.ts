/**
 * Aborting while a SuperNode is still trying to register (nothing listens at the address and
 * retries are unlimited): startSuperNode must give up at once with the abort reason, and the
 * library's startClient must resolve, instead of retrying until the next attempt ends.
 */
import { createServer } from "node:net";
import { ClientApp, NumPyClient } from "../../src/client";
import { startClient } from "../../src/compat";
import { silentLogger } from "../../src/core/logger";
import { startSuperNode } from "../../src/supernode/supernode";
import { memoryLogger, until } from "./helpers";

class IdleClient extends NumPyClient {}

/** A loopback port that nothing listens on (bound, read, released). */
async function deadAddress(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

test("startSuperNode rejects with the abort reason while it is still retrying CreateNode", async () => {
  const { logger, lines } = memoryLogger("debug");
  const controller = new AbortController();
  const started = startSuperNode(
    { superlink: await deadAddress(), insecure: true, app: new ClientApp({ clientFn: () => new IdleClient() }) },
    { logger, signal: controller.signal },
  );
  await until(() => lines.some((l) => l["event"] === "supernode.retry"), "a CreateNode retry");
  const reason = new Error("operator gave up");
  controller.abort(reason);
  await expect(started).rejects.toBe(reason);
});

test("startSuperNode with an already-aborted signal starts nothing", async () => {
  const controller = new AbortController();
  controller.abort(new Error("too late"));
  await expect(
    startSuperNode(
      { superlink: await deadAddress(), insecure: true, app: new ClientApp({ clientFn: () => new IdleClient() }) },
      { logger: silentLogger(), signal: controller.signal },
    ),
  ).rejects.toThrow("too late");
});

test("startClient resolves when aborted while the server is not up yet", async () => {
  const controller = new AbortController();
  const { logger, lines } = memoryLogger("debug");
  const running = startClient(await deadAddress(), {
    client: new IdleClient(),
    insecure: true,
    transport: "grpc-rere",
    logger,
    signal: controller.signal,
  });
  await until(() => lines.some((l) => l["event"] === "supernode.retry"), "a CreateNode retry");
  controller.abort();
  await expect(running).resolves.toBeUndefined();
});
