/**
 * Bench worker for the `idle` scenario: runs many authenticated SuperNodes in this one process
 * (startSuperNode, one gRPC channel each, the real ping and pull loops) with an empty ClientApp.
 * Logs JSON lines on stderr; `idle-worker.ready` once every node is registered. SIGTERM or
 * SIGINT: every node sends DeleteNode and closes, then the process exits.
 *
 * Usage: node idle-worker.js --superlink HOST:PORT --ca FILE --keys-dir DIR --first I --count N [--concurrency C]
 * (nodes use keys DIR/client_credentials_I .. I+N-1).
 */
import { loadKeyPairFiles } from "../src/auth/keys";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ClientApp } from "../src/client/client-app";
import { createLogger } from "../src/core/logger";
import { type SuperNodeHandle, startSuperNode } from "../src/supernode/supernode";
import { enableGrpcExtensions } from "../src/transport/grpc-extensions";

/** Registrations in flight at once (default; --concurrency): enough to be quick, few enough not to time out TLS handshakes. */
const DEFAULT_REGISTER_CONCURRENCY = 20;
const CLOSE_GRACE_MS = 2_000;

function flag(args: string[], name: string): string {
  const i = args.indexOf(name);
  const value = i >= 0 ? args[i + 1] : undefined;
  if (value === undefined) throw new Error(`idle-worker: missing ${name}`);
  return value;
}

async function main(args: string[]): Promise<number> {
  const superlink = flag(args, "--superlink");
  const rootCertificates = readFileSync(flag(args, "--ca"));
  const keysDir = flag(args, "--keys-dir");
  const first = Number(flag(args, "--first"));
  const count = Number(flag(args, "--count"));
  const concurrency = args.includes("--concurrency")
    ? Number(flag(args, "--concurrency"))
    : DEFAULT_REGISTER_CONCURRENCY;
  const logger = createLogger({ level: "info", base: { component: "idle-worker" } });
  const nodeLogger = logger.child({}, { level: "warn" });
  const app = new ClientApp();
  const handles: SuperNodeHandle[] = [];

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= Promise.all(handles.map((h) => h.close(CLOSE_GRACE_MS))).then(() => undefined));
  const stopped = new Promise<void>((resolve) => {
    const onSignal = (): void => void stop().then(resolve);
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
  });

  enableGrpcExtensions();
  const started = Date.now();
  const indices = Array.from({ length: count }, (_, k) => first + k);
  try {
    // A pool of `concurrency` registrations in flight (not batches: one slow handshake would stall a batch).
    let next = 0;
    const runner = async (): Promise<void> => {
      while (next < indices.length) {
        const i = indices[next++]!;
        handles.push(
          await startSuperNode(
            {
              superlink,
              rootCertificates,
              auth: loadKeyPairFiles(
                join(keysDir, `client_credentials_${i}`),
                join(keysDir, `client_credentials_${i}.pub`),
              ),
              app,
              nodeConfig: { "partition-id": BigInt(i - 1) },
            },
            { logger: nodeLogger.child({ node: i }) },
          ),
        );
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, concurrency) }, runner));
  } catch (err) {
    logger.error({ err }, "idle-worker: a SuperNode failed to start");
    await stop();
    return 1;
  }
  logger.info(
    { event: "idle-worker.ready", nodes: handles.length, registerSeconds: (Date.now() - started) / 1000 },
    `${handles.length} SuperNodes registered`,
  );
  // A node that stops on its own (refused, gave up) is a failed benchmark.
  const failed = Promise.race(
    handles.map((h) =>
      h.done.then(
        () => "stopped",
        () => "failed",
      ),
    ),
  );
  const outcome = await Promise.race([stopped.then(() => "signal"), failed]);
  if (stopping !== undefined) {
    await stopping; // nodes end their `done` while closing on a signal: that is no failure
    return 0;
  }
  if (outcome !== "signal") {
    logger.error({ event: "idle-worker.node-stopped", outcome }, "a SuperNode stopped on its own");
    await stop();
    return 1;
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`idle-worker: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
