/**
 * The seam between flwr-ts and grpc-js's internals. Five named extensions change or use grpc-js
 * internals (docs/grpc-extensions.md lists each internal, why, and how to re-review them):
 *
 * | name                  | what it does                                                  | in |
 * |-----------------------|---------------------------------------------------------------|----|
 * | server-zero-copy-send | responses framed in place / written as chunks                 | grpc-zero-copy.ts |
 * | client-zero-copy-send | requests framed in place / written as chunks                  | grpc-zero-copy.ts |
 * | incremental-decoder   | received messages copied into place as they arrive, budgeted  | grpc-zero-copy.ts |
 * | receive-guard         | pre-authentication byte budgets, per-method limits            | receive-guard.ts |
 * | server-session-hooks  | receive window, slow-sender deadline, silent connections      | grpc-server.ts |
 *
 * Nothing is applied on import or by creating a channel or server: a daemon calls
 * `enableGrpcExtensions()` (src/cli/* do; startServer/startClient have a `grpcExtensions`
 * option). They apply only to the exact grpc-js version they were reviewed against
 * (REVIEWED_GRPC_JS_VERSION), each one all-or-nothing: every internal it needs is located first,
 * and only then is anything replaced. The report says what was applied and why the rest was not.
 * The changes are process-wide (they replace prototype methods of the grpc-js that this package
 * resolves), so they also affect other grpc-js users in the same process that load that copy.
 */
import type { Logger } from "../core/logger";
import { RECEIVE_GUARD } from "./receive-guard";
import { SERVER_SESSION_HOOKS } from "./grpc-server";
import { CLIENT_ZERO_COPY_SEND, INCREMENTAL_DECODER, SERVER_ZERO_COPY_SEND } from "./grpc-zero-copy";
import {
  type GrpcExtension,
  type GrpcExtensionName,
  MissingGrpcInternal,
  REVIEWED_GRPC_JS_VERSION,
  activeGrpcExtensions,
  installedGrpcJsVersion,
  isGrpcExtensionActive,
  markGrpcExtensionActive,
} from "./grpc-internals";

export {
  REVIEWED_GRPC_JS_VERSION,
  activeGrpcExtensions,
  isGrpcExtensionActive,
  installedGrpcJsVersion,
  requireGrpcExtensions,
} from "./grpc-internals";
export type { GrpcExtensionName } from "./grpc-internals";

/** Every extension, in the order they are applied (a dependency before its dependents). */
const EXTENSIONS: readonly GrpcExtension[] = [
  SERVER_ZERO_COPY_SEND,
  CLIENT_ZERO_COPY_SEND,
  INCREMENTAL_DECODER,
  RECEIVE_GUARD,
  SERVER_SESSION_HOOKS,
];

export const GRPC_EXTENSION_NAMES: readonly GrpcExtensionName[] = EXTENSIONS.map((e) => e.name);

/** The extensions the SuperLink's gRPC Fleet API cannot run without (docs/security.md). */
export const FLEET_API_REQUIRED_EXTENSIONS: readonly GrpcExtensionName[] = [
  "incremental-decoder",
  "receive-guard",
  "server-session-hooks",
];

export interface GrpcExtensionsReport {
  /** The grpc-js found (its package.json version). */
  grpcJsVersion: string;
  reviewedVersion: string;
  /** Active after this call (applied now or earlier), in application order. */
  active: GrpcExtensionName[];
  /** Applied by this call. */
  applied: GrpcExtensionName[];
  /** Asked for but not applied, with the reason. */
  refused: Array<{ name: GrpcExtensionName; reason: string }>;
}

export interface EnableGrpcExtensionsOptions {
  /** Which extensions (default all). */
  only?: readonly GrpcExtensionName[];
  /** Gets one debug line saying what is active, and one warning per refused extension. */
  logger?: Logger;
}

/**
 * Applies the extensions (all, or `only`) to the installed grpc-js, process-wide. Idempotent: an
 * extension already active is not applied again. Nothing is applied to a grpc-js of another
 * version than REVIEWED_GRPC_JS_VERSION; an extension whose internals are missing, or whose
 * dependency is not active, is refused alone. Never throws for those: read the report.
 */
export function enableGrpcExtensions(options: EnableGrpcExtensionsOptions = {}): GrpcExtensionsReport {
  const wanted = new Set<GrpcExtensionName>(options.only ?? GRPC_EXTENSION_NAMES);
  const grpcJsVersion = installedGrpcJsVersion();
  const applied: GrpcExtensionName[] = [];
  const refused: GrpcExtensionsReport["refused"] = [];
  for (const extension of EXTENSIONS) {
    if (!wanted.has(extension.name) || isGrpcExtensionActive(extension.name)) continue;
    if (grpcJsVersion !== REVIEWED_GRPC_JS_VERSION) {
      refused.push({
        name: extension.name,
        reason: `grpc-js ${grpcJsVersion} is not the reviewed ${REVIEWED_GRPC_JS_VERSION}`,
      });
      continue;
    }
    const missing = (extension.requires ?? []).filter((name) => !isGrpcExtensionActive(name));
    if (missing.length > 0) {
      refused.push({ name: extension.name, reason: `needs ${missing.join(", ")}` });
      continue;
    }
    let apply: () => void;
    try {
      apply = extension.prepare();
    } catch (err) {
      if (!(err instanceof MissingGrpcInternal)) throw err;
      refused.push({ name: extension.name, reason: err.message });
      continue;
    }
    apply();
    markGrpcExtensionActive(extension.name);
    applied.push(extension.name);
  }
  const report: GrpcExtensionsReport = {
    grpcJsVersion,
    reviewedVersion: REVIEWED_GRPC_JS_VERSION,
    active: activeGrpcExtensions(),
    applied,
    refused,
  };
  if (options.logger !== undefined) logReport(options.logger, report);
  return report;
}

function logReport(logger: Logger, report: GrpcExtensionsReport): void {
  for (const { name, reason } of report.refused) {
    logger.warn(
      { event: "grpc.extension-refused", extension: name, reason },
      `grpc-js extension ${name} not applied: ${reason}`,
    );
  }
  // Debug: each daemon's ready line says what is active; the library API logs its own info line.
  logger.debug(
    { event: "grpc.extensions", grpcJsVersion: report.grpcJsVersion, active: report.active, applied: report.applied },
    `grpc-js ${report.grpcJsVersion} extensions active (process-wide): ${report.active.length > 0 ? report.active.join(", ") : "none"}`,
  );
}
