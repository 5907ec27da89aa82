/** Wire-level helpers that need no gRPC: the deterministic (HMAC input) encoder. */
export { canonicalEncode, canonicalEncodeChunks, hasPrefixRelatedMapKeys, type FleetRequestName, type MapOrder } from "./canonical";
