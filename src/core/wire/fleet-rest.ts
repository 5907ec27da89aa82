/**
 * Flower 1.10's REST Fleet API (`flower-superlink --fleet-api-type rest`), shared by our REST
 * SuperLink and our REST SuperNode connection: one POST route per Fleet RPC, protobuf bodies
 * both ways, `Content-Type` and `Accept` both `application/protobuf` (Flower answers 400 to
 * anything else). Node authentication travels as the same `public-key` / `auth-token` headers
 * as over gRPC (a flwr-ts extension: Flower's REST transport has none).
 */

/** Default REST Fleet API address. Flower 1.10. */
export const DEFAULT_FLEET_REST_ADDRESS = "0.0.0.0:9093";

/** The only body type either side accepts. Flower 1.10. */
export const PROTOBUF_CONTENT_TYPE = "application/protobuf";

/** Route of each Fleet RPC (grpc-js method name -> path). Flower 1.10. */
export const FLEET_REST_PATHS = {
  createNode: "/api/v0/fleet/create-node",
  deleteNode: "/api/v0/fleet/delete-node",
  pullTaskIns: "/api/v0/fleet/pull-task-ins",
  pushTaskRes: "/api/v0/fleet/push-task-res",
  ping: "/api/v0/fleet/ping",
  getRun: "/api/v0/fleet/get-run",
} as const;

export type FleetRestMethod = keyof typeof FLEET_REST_PATHS;

/**
 * flwr-ts default cap of a REST request body: gRPC's 512 MiB message limit, so a model that
 * fits over gRPC fits over REST too.
 */
export const DEFAULT_REST_MAX_BODY_BYTES = 536_870_912;
