import { maxWaitFor } from "../../src/superlink/unary";

describe("maxWaitFor (long-poll wait bounded by the call deadline)", () => {
  test("without a deadline the configured long-poll time applies", () => {
    expect(maxWaitFor({ getDeadline: () => Infinity }, 2000)).toBe(2000);
  });

  test("a far deadline does not lengthen the wait", () => {
    expect(maxWaitFor({ getDeadline: () => new Date(Date.now() + 3_600_000) }, 2000)).toBe(2000);
    expect(maxWaitFor({ getDeadline: () => Date.now() + 3_600_000 }, 2000)).toBe(2000);
  });

  test("a near deadline shortens the wait so the answer goes out before it", () => {
    const wait = maxWaitFor({ getDeadline: () => Date.now() + 1000 }, 60_000);
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThan(1000);
  });

  test("a deadline already passed (or about to) means no wait", () => {
    expect(maxWaitFor({ getDeadline: () => new Date(Date.now() - 10) }, 2000)).toBe(0);
    expect(maxWaitFor({ getDeadline: () => Date.now() + 50 }, 2000)).toBe(0);
  });
});
