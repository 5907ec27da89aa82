/** Strategies of the legacy loop and their aggregation math. */
export * from "./strategy";
export {
  aggregate,
  aggregateInplace,
  aggregateMedian,
  aggregateInplaceSources,
  CHUNK_ELEMENTS,
  aggregateSources,
  aggregateMedianSources,
  arraySource,
  weightedLossAvg,
  type ArraySource,
  type WeightedArrays,
  type WeightedSources,
} from "./aggregate";
export { FedAvg, type FedAvgOptions } from "./fedavg";
export { FedProx, type FedProxOptions } from "./fedprox";
export { FedOpt, type FedOptOptions } from "./fedopt";
export { FedAdam } from "./fedadam";
export { FedMedian } from "./fedmedian";
