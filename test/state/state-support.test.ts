import { isoTimestamp, normalizeTaskId } from "../../src/state/state-support";

describe("isoTimestamp", () => {
  // Expected strings printed by Python: datetime.fromtimestamp(t, timezone.utc).isoformat()
  test.each([
    [1720433472.123456, "2024-07-08T10:11:12.123456+00:00"],
    [1720433472.0, "2024-07-08T10:11:12+00:00"],
    [1720433472.5, "2024-07-08T10:11:12.500000+00:00"],
    [1711497600.000001, "2024-03-27T00:00:00.000001+00:00"],
  ])("%s prints as Python's isoformat: %s", (seconds, expected) => {
    expect(isoTimestamp(seconds)).toBe(expected);
  });

  test("a fraction rounding up to a whole second carries into the seconds", () => {
    // eslint-disable-next-line no-loss-of-precision -- the nearest double, as Python's time.time() could return it
    expect(isoTimestamp(1720433472.9999999)).toBe("2024-07-08T10:11:13+00:00");
  });
});

describe("normalizeTaskId", () => {
  test("lowercases", () => {
    expect(normalizeTaskId("C9A4B7A4-6F39-4E8E-9BB4-0D2F5C1E7A10")).toBe("c9a4b7a4-6f39-4e8e-9bb4-0d2f5c1e7a10");
  });
});
