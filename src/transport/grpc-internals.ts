/**
 * The one place that knows grpc-js has internals: the reviewed version, guarded requires of its
 * build files, its tracer, and which extensions (src/transport/grpc-extensions.ts) are active.
 * Nothing here changes grpc-js; importing it has no effect.
 */
import { createRequire } from "node:module";
import { InvalidConfigError } from "../core/errors";

/**
 * The grpc-js release whose internals every extension was reviewed against (docs/grpc-extensions.md).
 * package.json pins exactly this version; test/transport/grpc-extensions.test.ts fails otherwise.
 */
export const REVIEWED_GRPC_JS_VERSION = "1.14.7";

/** The extensions, by name (docs/grpc-extensions.md says what each one touches and why). */
export type GrpcExtensionName =
  "server-zero-copy-send" | "client-zero-copy-send" | "incremental-decoder" | "receive-guard" | "server-session-hooks";

/** One extension: `prepare` finds every internal it needs or throws MissingGrpcInternal; the returned function applies it. */
export interface GrpcExtension {
  readonly name: GrpcExtensionName;
  /** Extensions that must be active (or applied in the same call) first. */
  readonly requires?: readonly GrpcExtensionName[];
  prepare(): () => void;
}

/** An internal an extension needs is not where the reviewed grpc-js has it. */
export class MissingGrpcInternal extends Error {
  override readonly name = "MissingGrpcInternal";
}

const active = new Set<GrpcExtensionName>();

/** Whether `name` was applied in this process. */
export function isGrpcExtensionActive(name: GrpcExtensionName): boolean {
  return active.has(name);
}

/** The active extensions, in the order they were applied. */
export function activeGrpcExtensions(): GrpcExtensionName[] {
  return [...active];
}

/** For grpc-extensions.ts only: records an applied extension. */
export function markGrpcExtensionActive(name: GrpcExtensionName): void {
  active.add(name);
}

/** The version of the grpc-js that `require("@grpc/grpc-js")` resolves to, or "unknown". */
export function installedGrpcJsVersion(): string {
  try {
    // Resolved next to grpc-js's own entry point, so a nested copy is the one asked.
    const entry = require.resolve("@grpc/grpc-js");
    const pkg = createRequire(entry)("../../package.json") as { name?: unknown; version?: unknown };
    return pkg.name === "@grpc/grpc-js" && typeof pkg.version === "string" ? pkg.version : "unknown";
  } catch {
    return "unknown";
  }
}

/**
 * `load()` is a literal `require` of one grpc-js build file (literal, so a bundler that keeps
 * requires sees it); a missing file or export becomes MissingGrpcInternal naming `what`.
 */
export function requireGrpcInternal<T>(
  what: string,
  load: () => unknown,
  pick: (mod: Record<string, unknown>) => T | undefined,
): T {
  let mod: unknown;
  try {
    mod = load();
  } catch (err) {
    throw new MissingGrpcInternal(`${what}: cannot load (${err instanceof Error ? err.message : String(err)})`);
  }
  const found = typeof mod === "object" && mod !== null ? pick(mod as Record<string, unknown>) : undefined;
  if (found === undefined) throw new MissingGrpcInternal(`${what}: not exported`);
  return found;
}

/** Throws MissingGrpcInternal unless `holder[key]` is a function. */
export function requireMethod(what: string, holder: object | undefined, key: string): void {
  if (holder === undefined || typeof (holder as Record<string, unknown>)[key] !== "function") {
    throw new MissingGrpcInternal(`${what}.${key}: not a function`);
  }
}

/** grpc-js's tracer (build/src/logging): `trace(severity, tracer, text)`, on when GRPC_TRACE names the tracer. */
export interface GrpcTracer {
  trace(tracer: string, text: string): void;
  enabled(tracer: string): boolean;
}

/** LogVerbosity.DEBUG in grpc-js's constants. */
const DEBUG_SEVERITY = 0;

/** grpc-js's own tracer, so the paths the extensions replace keep their GRPC_TRACE output. */
export function grpcTracer(): GrpcTracer {
  const logging = requireGrpcInternal(
    "build/src/logging",
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a literal require of one reviewed build file (docs/grpc-extensions.md)
    () => require("@grpc/grpc-js/build/src/logging"),
    (mod) =>
      typeof mod["trace"] === "function" && typeof mod["isTracerEnabled"] === "function"
        ? (mod as {
            trace: (severity: number, tracer: string, text: string) => void;
            isTracerEnabled: (tracer: string) => boolean;
          })
        : undefined,
  );
  return {
    trace: (tracer, text) => {
      logging.trace(DEBUG_SEVERITY, tracer, text);
    },
    enabled: (tracer) => logging.isTracerEnabled(tracer),
  };
}

/**
 * Throws InvalidConfigError unless every extension in `names` is active: `what` (e.g. "The Fleet
 * API") needs them for its security limits (docs/security.md), and runs without them nowhere.
 */
export function requireGrpcExtensions(names: readonly GrpcExtensionName[], what: string): void {
  const missing = names.filter((name) => !active.has(name));
  if (missing.length === 0) return;
  throw new InvalidConfigError(
    `${what} needs the grpc-js extensions ${missing.join(", ")} for its receive limits, and they are not active ` +
      `(grpc-js ${installedGrpcJsVersion()}, reviewed ${REVIEWED_GRPC_JS_VERSION}). Call enableGrpcExtensions() before starting it ` +
      "(the flower-* commands do); see docs/grpc-extensions.md",
  );
}
