/**
 * The `grpcExtensions` option of startServer and startClient: whether the one-call API enables
 * flwr-ts's grpc-js extensions (src/transport/grpc-extensions.ts) in the caller's process.
 * Default true, logged at info, because startServer's Fleet API refuses to start without them
 * (docs/security.md) and both sides need them for large models without extra copies.
 */
import type { Logger } from "../core/logger";
import { enableGrpcExtensions } from "../transport/grpc-extensions";

/** What the option says; `caller` names the function in the log line. */
export function applyGrpcExtensionsOption(enable: boolean | undefined, caller: string, logger: Logger): void {
  if (enable === false) return;
  const report = enableGrpcExtensions({ logger });
  if (report.applied.length === 0) return;
  logger.info(
    { event: "compat.grpc-extensions-enabled", grpcJsVersion: report.grpcJsVersion, applied: report.applied },
    `${caller} enabled grpc-js ${report.grpcJsVersion} extensions process-wide: ${report.applied.join(", ")} ` +
      `(pass grpcExtensions: false to leave grpc-js unmodified; docs/grpc-extensions.md)`,
  );
}
