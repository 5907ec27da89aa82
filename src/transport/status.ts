/**
 * The one place where errors become gRPC statuses (server side) and statuses become typed
 * errors (client side). Details never carry stacks or key material.
 */
import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { FlwrError } from "../core/errors";
import { isCallFailure } from "./call-errors";
import { truncateEcho } from "../core/logger";

/** Called with a fresh incident id for a failure whose details must stay in the server's log. */
export type IncidentReporter = (incidentId: string, err: unknown) => void;

/**
 * A server-side error object that grpc-js turns into a status. Messages are truncated with
 * `truncateEcho`. State failures and unexpected exceptions can carry file paths and internals,
 * and callers of the Driver API are anonymous: they get INTERNAL with only an incident id, which
 * `report` receives with the error, for the log (without `report`: INTERNAL, no id).
 */
export function toServiceError(err: unknown, report?: IncidentReporter): Partial<grpc.StatusObject> {
  if (FlwrError.isFlwrError(err)) {
    switch (err.code) {
      case "FLWR_AUTHENTICATION_FAILED":
        return { code: grpc.status.UNAUTHENTICATED, details: "Access denied" };
      case "FLWR_MALFORMED_MESSAGE":
        return { code: grpc.status.INVALID_ARGUMENT, details: truncateEcho(err.message) };
      case "FLWR_NOT_FOUND":
        return { code: grpc.status.NOT_FOUND, details: truncateEcho(err.message) };
      case "FLWR_RESOURCE_EXHAUSTED":
        return { code: grpc.status.RESOURCE_EXHAUSTED, details: truncateEcho(err.message) };
      case "FLWR_UNKNOWN_CONTENT":
        return { code: grpc.status.FAILED_PRECONDITION, details: truncateEcho(err.message) };
      default:
        break;
    }
  }
  if (report === undefined) return { code: grpc.status.INTERNAL, details: "Internal error" };
  const incidentId = randomBytes(6).toString("hex");
  report(incidentId, err);
  return {
    code: grpc.status.INTERNAL,
    details: `Internal error (incident ${incidentId}; details are in the SuperLink's log)`,
  };
}

/** True for a grpc-js client error (it carries a numeric `code`). */
export const isServiceError = isCallFailure as (err: unknown) => err is grpc.ServiceError;

export {
  cleanDetails,
  fromServiceError,
  isCertificateFailure,
  tlsSetupError,
  withoutResolutionNote,
} from "./call-errors";
