/**
 * Refuses an oversized PushTaskIns before it is decoded. Decoding 200 000 tiny TaskIns (a
 * 9.9 MiB request) takes the event loop about 2 s on a loaded 2-core machine, so the per-push
 * limit is checked on the raw bytes: counting the top-level `task_ins_list` entries only reads
 * their tags and lengths. A refused request decodes to an empty stand-in that the servicer
 * answers with RESOURCE_EXHAUSTED.
 */
import type * as grpc from "@grpc/grpc-js";

/** Requests refused by count, with the count, for the servicer to answer. */
const refusedCounts = new WeakMap<object, number>();

/** The TaskIns count of a PushTaskIns that was refused undecoded, or undefined. */
export function refusedTaskInsCount(request: object): number | undefined {
  return refusedCounts.get(request);
}

/**
 * Counts field `field` (`task_ins_list`: 1 in PushTaskIns, 2 in PushSharedTaskIns; length-delimited) at the top level of an encoded
 * PushTaskInsRequest, stopping once `stopAbove` is passed. Undefined for bytes that do not parse
 * (the real decoder then reports them as it always did).
 */
export function countTaskInsEntries(bytes: Uint8Array, stopAbove: number, field = 1): number | undefined {
  let pos = 0;
  let count = 0;
  const varint = (): number | undefined => {
    let result = 0;
    let shift = 0;
    while (pos < bytes.length && shift < 64) {
      const byte = bytes[pos++]!;
      result += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) return result;
      shift += 7;
    }
    return undefined;
  };
  while (pos < bytes.length) {
    const tag = varint();
    if (tag === undefined) return undefined;
    const wireType = tag % 8;
    if (wireType === 2) {
      const length = varint();
      if (length === undefined || pos + length > bytes.length) return undefined;
      pos += length;
      if (Math.floor(tag / 8) === field && ++count > stopAbove) return count;
    } else if (wireType === 0) {
      if (varint() === undefined) return undefined;
    } else if (wireType === 1) {
      pos += 8;
    } else if (wireType === 5) {
      pos += 4;
    } else {
      return undefined;
    }
  }
  return count;
}

/**
 * A copy of a Driver service definition whose PushTaskIns deserializer refuses, undecoded, a
 * request carrying more than `max` TaskIns. The input is not modified.
 */
export function withTaskInsCountLimit<D extends grpc.ServiceDefinition>(
  definition: D,
  max: number,
  methodName = "pushTaskIns",
  field = 1,
): D {
  const method = definition[methodName] as grpc.MethodDefinition<object, object> | undefined;
  if (method === undefined) throw new Error(`withTaskInsCountLimit: no ${methodName} in the service definition`);
  const decode = method.requestDeserialize;
  const limited: grpc.MethodDefinition<object, object> = {
    ...method,
    requestDeserialize: (bytes: Buffer): object => {
      const count = countTaskInsEntries(bytes, max, field);
      if (count === undefined || count <= max) return decode(bytes);
      const standIn = { taskInsList: [] };
      refusedCounts.set(standIn, count);
      return standIn;
    },
  };
  return { ...definition, [methodName]: limited };
}
