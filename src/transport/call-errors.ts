/**
 * Client-side reading of failed calls, for every transport: gRPC status codes (the numbers of
 * grpc-js's `status`), typed errors from a failed call, and the TLS diagnoses. Imports nothing
 * from grpc-js or Node, so the browser SuperNode shares it (src/transport/status.ts re-exports
 * it for the gRPC side).
 */
import {
  AuthenticationError,
  ConnectionError,
  type FlwrError,
  InvalidConfigError,
  MalformedMessageError,
  NotFoundError,
  TimeoutError,
  errorMessage,
} from "../core/errors";

/** gRPC status codes, as grpc-js's `status` enum numbers them. */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

const STATUS_NAMES = new Map<number, string>(Object.entries(GrpcStatus).map(([name, code]) => [code, name]));

/** "UNAVAILABLE" for 14; undefined for a number that is no status. */
export function statusName(code: number): string | undefined {
  return STATUS_NAMES.get(code);
}

/** What a failed call carries, whichever transport made it (grpc-js ServiceError, FleetCallError). */
export interface CallFailure {
  code: number;
  details: string;
}

/** True for a failed call of either transport: a grpc-js ServiceError or a FleetCallError. */
export function isCallFailure(err: unknown): err is CallFailure {
  return (
    typeof err === "object" && err !== null && typeof (err as { code?: unknown }).code === "number" && "details" in err
  );
}

/** Client side: a typed error for a failed call, keeping the original as `cause`. */
export function fromServiceError(err: unknown, what: string): FlwrError {
  if (!isCallFailure(err)) return new ConnectionError(`${what} failed: ${errorMessage(err)}`, { cause: err });
  const details = err.details || statusName(err.code) || String(err.code);
  switch (err.code) {
    case GrpcStatus.UNAUTHENTICATED:
      return new AuthenticationError(`${what} was refused by the SuperLink: ${details}`, { cause: err });
    case GrpcStatus.INVALID_ARGUMENT:
      return new MalformedMessageError(`${what} was rejected: ${details}`, { cause: err });
    case GrpcStatus.NOT_FOUND:
      return new NotFoundError(`${what}: ${details}`, { cause: err });
    case GrpcStatus.DEADLINE_EXCEEDED:
      return new TimeoutError(`${what} timed out: ${details}`, { cause: err });
    default:
      return new ConnectionError(`${what} failed (${statusName(err.code) ?? err.code}): ${details}`, { cause: err });
  }
}

/** Node's TLS verification failures, as grpc-js reports them in UNAVAILABLE details. */
const CERTIFICATE_FAILURE =
  /certificate|altnames|CERT_|unable to verify|unable to get (local )?issuer|self[- ]signed|ERR_TLS_CERT/i;

/** OpenSSL's complaint when the peer answers a TLS handshake with plaintext (an --insecure server). */
const PLAINTEXT_PEER = /wrong version number/i;

/** True when a failed call is a TLS certificate verification failure. */
export function isCertificateFailure(err: unknown): boolean {
  return isCallFailure(err) && err.code === GrpcStatus.UNAVAILABLE && CERTIFICATE_FAILURE.test(err.details);
}

/** grpc-js appends an empty "Resolution note: " to connection errors; it only adds noise. */
export function withoutResolutionNote(text: string): string {
  return text.replace(/\.?\s*Resolution note:\s*$/, "");
}

/** grpc-js details without its resolution note and OpenSSL source locations. */
export function cleanDetails(details: string | undefined): string {
  return withoutResolutionNote(details ?? "")
    .replace(/:\.\.\/deps\/openssl\/[^\s]*:\d+:\s*$/, "")
    .trim();
}

/**
 * A failed call that retrying cannot fix because TLS is set up wrong on this side: the
 * certificate is not vouched for by the given CA (or names another host), or the peer speaks
 * plaintext. `peer` names what was dialled ("the SuperLink at HOST:PORT"), `insecureHint`
 * says which side to restart with --insecure. Undefined for any other failure.
 */
export function tlsSetupError(err: unknown, peer: string, insecureHint: string): InvalidConfigError | undefined {
  if (!isCallFailure(err) || err.code !== GrpcStatus.UNAVAILABLE) return undefined;
  const details = cleanDetails(err.details) || "UNAVAILABLE";
  if (PLAINTEXT_PEER.test(details)) {
    return new InvalidConfigError(
      `${capitalize(peer)} does not speak TLS (${details}): it probably runs with --insecure. ` +
        `Start it with certificates, or ${insecureHint}.`,
      { cause: err },
    );
  }
  if (isCertificateFailure(err)) {
    return new InvalidConfigError(
      `TLS certificate verification of ${peer} failed (${details}). ` +
        "Pass the CA certificate that signed the SuperLink's certificate with --root-certificates, " +
        "and connect with a host name or IP address that the certificate names.",
      { cause: err },
    );
  }
  return undefined;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
