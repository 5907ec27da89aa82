import { PushTaskInsRequest } from "../../src/proto/flwr/proto/driver";
import {
  countTaskInsEntries,
  refusedTaskInsCount,
  withTaskInsCountLimit,
} from "../../src/superlink/driver/push-count-limit";
import { DriverService } from "../../src/proto/flwr/proto/driver";
import { validTaskIns } from "./helpers";

const encoded = (n: number): Buffer =>
  Buffer.from(
    PushTaskInsRequest.encode({ taskInsList: Array.from({ length: n }, () => validTaskIns(5n, 7n)) }).finish(),
  );

test("counts the TaskIns of an encoded request without decoding it, stopping past the bound", () => {
  for (const n of [0, 1, 3, 50]) expect(countTaskInsEntries(encoded(n), 1000)).toBe(n);
  expect(countTaskInsEntries(encoded(50), 10)).toBe(11);
  // Unknown fields of every wire type are skipped.
  const withUnknown = Buffer.concat([
    Buffer.from([0x10, 0x96, 0x01, 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 1, 2, 3, 4]),
    encoded(2),
  ]);
  expect(countTaskInsEntries(withUnknown, 1000)).toBe(2);
});

test("malformed bytes are left to the real decoder", () => {
  expect(countTaskInsEntries(Buffer.from([0x0a, 0x05, 0x01]), 10)).toBeUndefined(); // length past the end
  expect(countTaskInsEntries(Buffer.from([0x0b]), 10)).toBeUndefined(); // wire type 3
  expect(countTaskInsEntries(Buffer.from([0x80]), 10)).toBeUndefined(); // truncated varint
});

test("the limited deserializer decodes requests within the limit and stands in for larger ones", () => {
  const definition = withTaskInsCountLimit(DriverService, 3);
  const decode = definition.pushTaskIns.requestDeserialize;
  const ok = decode(encoded(3));
  expect(ok.taskInsList).toHaveLength(3);
  expect(refusedTaskInsCount(ok)).toBeUndefined();
  const refused = decode(encoded(200));
  expect(refused.taskInsList).toEqual([]);
  expect(refusedTaskInsCount(refused)).toBe(4);
  expect(DriverService.pushTaskIns.requestDeserialize(encoded(200)).taskInsList).toHaveLength(200); // input untouched
});
