/**
 * The SuperNode's retry policy. The code lives in src/transport/retry.ts so the ServerApp's
 * Driver can share the capped backoff without one daemon importing another.
 */
export * from "../transport/retry";
