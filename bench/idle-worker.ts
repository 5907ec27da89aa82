/**
 * Bench worker for the `idle` and `round1000` scenarios: runs many authenticated SuperNodes in
 * this one process (startSuperNode, one gRPC channel each, the real ping and pull loops) with an
 * empty ClientApp (`--app empty`, idle) or a tiny NumPyClient (`--app tiny`: two float32 arrays,
 * as bench/lib/apps.ts's rounds client).
 * Logs JSON lines on stderr; `idle-worker.ready` once every node is registered. SIGTERM or
 * SIGINT: every node sends DeleteNode and closes, then the process exits.
 *
 * Usage: node idle-worker.js --superlink HOST:PORT --ca FILE --keys-dir DIR --first I --count N
 *   [--concurrency C] [--app empty|tiny] [--start-on-signal]
 * (nodes use keys DIR/client_credentials_I .. I+N-1).
 *
 * The key files are read and parsed first (`idle-worker.loaded`), so registration times cover
 * registration alone; with --start-on-signal the worker then waits for SIGUSR2, which lets the
 * bench start every worker's registrations at once, after every process has started.
 */
import { loadKeyPairFiles } from "../src/auth/keys";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ClientApp } from "../src/client/client-app";
import { type EvaluateResult, type FitResult, NumPyClient } from "../src/client/numpy-client";
import type { NDArrays } from "../src/core/records/types";
import { createLogger } from "../src/core/logger";
import { type SuperNodeHandle, startSuperNode } from "../src/supernode/supernode";
import { enableGrpcExtensions } from "../src/transport/grpc-extensions";

/**
 * Registrations in flight at once per worker (default; --concurrency), as a pool (a new one
 * starts as soon as one is done): enough to keep the SuperLink busy, few enough not to time out
 * TLS handshakes.
 */
const DEFAULT_REGISTER_CONCURRENCY = 20;
const CLOSE_GRACE_MS = 2_000;

/** The rounds scenario's tiny model: fit adds 0.5 to every value, evaluate reports the mean. */
class TinyClient extends NumPyClient {
  override getParameters(): NDArrays {
    return [
      { dtype: "float32", shape: [3, 4], data: new Float32Array(12) },
      { dtype: "float32", shape: [4], data: new Float32Array(4) },
    ];
  }
  override fit(parameters: NDArrays): FitResult {
    const updated = parameters.map((p) => ({
      dtype: "float32" as const,
      shape: p.shape,
      data: Float32Array.from(p.data as Float32Array, (v) => v + 0.5),
    }));
    return [updated, 10, { loss: 0.5 }];
  }
  override evaluate(parameters: NDArrays): EvaluateResult {
    let sum = 0;
    let n = 0;
    for (const p of parameters) {
      for (const v of p.data as Float32Array) sum += v;
      n += p.data.length;
    }
    return [n === 0 ? 0 : sum / n, 5, { accuracy: 0.5 }];
  }
}

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
  const appName = args.includes("--app") ? flag(args, "--app") : "empty";
  if (appName !== "empty" && appName !== "tiny")
    throw new Error(`idle-worker: --app must be empty or tiny, got ${appName}`);
  const app = appName === "tiny" ? new ClientApp({ clientFn: () => new TinyClient().toClient() }) : new ClientApp();
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
  const keyPairs = Array.from({ length: count }, (_, k) => {
    const i = first + k;
    return {
      i,
      keys: loadKeyPairFiles(join(keysDir, `client_credentials_${i}`), join(keysDir, `client_credentials_${i}.pub`)),
    };
  });
  // Listening before "loaded" is logged: the bench signals as soon as it reads that line.
  const signalled = args.includes("--start-on-signal")
    ? new Promise<boolean>((resolve) => process.once("SIGUSR2", () => resolve(true)))
    : undefined;
  logger.info({ event: "idle-worker.loaded", nodes: count }, `${count} key pairs loaded`);
  if (signalled !== undefined) {
    // A signal listener alone does not keep the process alive.
    const keepAlive = setInterval(() => undefined, 60_000);
    const go = await Promise.race([signalled, stopped.then(() => false)]);
    clearInterval(keepAlive);
    if (!go) return 0;
  }
  const started = Date.now();
  try {
    let next = 0;
    const startNext = async (): Promise<void> => {
      while (next < keyPairs.length && stopping === undefined) {
        const { i, keys } = keyPairs[next++]!;
        handles.push(
          await startSuperNode(
            { superlink, rootCertificates, auth: keys, app, nodeConfig: { "partition-id": BigInt(i - 1) } },
            { logger: nodeLogger.child({ node: i }) },
          ),
        );
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, startNext));
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
