/**
 * The one place where errors become gRPC statuses (server side) and statuses become typed
 * errors (client side). Details never carry stacks or key material.
 */
import * as grpc from "@grpc/grpc-js";
import {
  AuthenticationError,
  ConnectionError,
  FlwrError,
  MalformedMessageError,
  NotFoundError,
  TimeoutError,
  errorMessage,
} from "../core/errors";

/** A server-side error object that grpc-js turns into a status. */
export function toServiceError(err: unknown): Partial<grpc.StatusObject> {
  if (FlwrError.isFlwrError(err)) {
    switch (err.code) {
      case "FLWR_AUTHENTICATION_FAILED":
        return { code: grpc.status.UNAUTHENTICATED, details: "Access denied" };
      case "FLWR_MALFORMED_MESSAGE":
        return { code: grpc.status.INVALID_ARGUMENT, details: err.message };
      case "FLWR_NOT_FOUND":
        return { code: grpc.status.NOT_FOUND, details: err.message };
      default:
        return { code: grpc.status.UNKNOWN, details: err.message };
    }
  }
  return { code: grpc.status.UNKNOWN, details: `Exception calling application: ${errorMessage(err)}` };
}

/** True for a grpc-js client error (it carries a numeric `code`). */
export function isServiceError(err: unknown): err is grpc.ServiceError {
  return typeof err === "object" && err !== null && typeof (err as { code?: unknown }).code === "number" && "details" in err;
}

/** Client side: a typed error for a failed call, keeping the original as `cause`. */
export function fromServiceError(err: unknown, what: string): FlwrError {
  if (!isServiceError(err)) return new ConnectionError(`${what} failed: ${errorMessage(err)}`, { cause: err });
  const details = err.details || grpc.status[err.code] || String(err.code);
  switch (err.code) {
    case grpc.status.UNAUTHENTICATED:
      return new AuthenticationError(`${what} was refused by the SuperLink: ${details}`, { cause: err });
    case grpc.status.INVALID_ARGUMENT:
      return new MalformedMessageError(`${what} was rejected: ${details}`, { cause: err });
    case grpc.status.NOT_FOUND:
      return new NotFoundError(`${what}: ${details}`, { cause: err });
    case grpc.status.DEADLINE_EXCEEDED:
      return new TimeoutError(`${what} timed out: ${details}`, { cause: err });
    default:
      return new ConnectionError(`${what} failed (${grpc.status[err.code] ?? err.code}): ${details}`, { cause: err });
  }
}

/** Whether a failed call is worth retrying (peer down, overloaded, connection reset). */
export function isRetryableStatus(code: grpc.status): boolean {
  return (
    code === grpc.status.UNAVAILABLE ||
    code === grpc.status.DEADLINE_EXCEEDED ||
    code === grpc.status.RESOURCE_EXHAUSTED ||
    code === grpc.status.ABORTED ||
    code === grpc.status.INTERNAL ||
    code === grpc.status.UNKNOWN
  );
}
