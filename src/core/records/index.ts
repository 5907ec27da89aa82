/**
 * Public surface of the records layer: domain types, the .npy codec, legacy Parameters
 * helpers, wire serde and the legacy <-> RecordSet compatibility mapping.
 */
export * from "./types";
export * from "./legacy-types";
export { ndarrayToNpy, npyToNdarray } from "./npy";
export { NUMPY_TENSOR_TYPE, ndarraysToParameters, parametersToNdarrays } from "./parameters";
export {
  createReply,
  messageFromTaskIns,
  messageFromTaskRes,
  messageToTaskIns,
  messageToTaskRes,
  recordSetFromProto,
  recordSetToProto,
  recordToScalarMap,
  scalarMapToRecord,
} from "./serde";
export {
  EMPTY_TENSOR_KEY,
  evaluateInsToRecordSet,
  evaluateResToRecordSet,
  fitInsToRecordSet,
  fitResToRecordSet,
  getParametersInsToRecordSet,
  getParametersResToRecordSet,
  getPropertiesInsToRecordSet,
  getPropertiesResToRecordSet,
  parametersRecordToParameters,
  parametersToParametersRecord,
  recordSetToEvaluateIns,
  recordSetToEvaluateRes,
  recordSetToFitIns,
  recordSetToFitRes,
  recordSetToGetParametersIns,
  recordSetToGetParametersRes,
  recordSetToGetPropertiesIns,
  recordSetToGetPropertiesRes,
} from "./compat";
