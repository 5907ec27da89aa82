/** Text log lines cannot be forged or garbled by control characters; echoes are bounded. */
import { escapeControlChars, formatLogLine, truncateEcho } from "../../src/core/logger";

describe("formatLogLine", () => {
  it("renders one JSON line as exactly one text line, control characters escaped", () => {
    const line = JSON.stringify({
      level: 30,
      time: "2026-01-01T12:00:00.000Z",
      component: "supernode",
      msg: "[RUN 1, ROUND 1]\n12:00:00.000 ERROR [superlink] forged",
      groupId: "a\rb\u001b[2Kc\u2028d\u202ee",
      err: { message: "x\ny" },
    });
    const text = formatLogLine(line);
    expect(text.endsWith("\n")).toBe(true);
    expect(text.slice(0, -1)).not.toMatch(/[\n\r\u001b\u2028\u202e]/);
    expect(text).toContain("ROUND 1]\\n12:00:00.000 ERROR");
    expect(text).toContain("groupId=a\\rb\\u001b[2Kc\\u2028d\\u202ee");
    expect(text).toContain('err="x\\ny"');
  });

  it("escapes a line that is not JSON too", () => {
    expect(formatLogLine("plain\u001b[31m text")).toBe("plain\\u001b[31m text\n");
  });

  it("leaves ordinary text, tabs aside, as it is", () => {
    expect(escapeControlChars("Ünïcode 🌸 ok")).toBe("Ünïcode 🌸 ok");
    expect(escapeControlChars("a\tb")).toBe("a\\tb");
  });
});

describe("truncateEcho", () => {
  it("keeps short text and cuts long text with a marker", () => {
    expect(truncateEcho("short")).toBe("short");
    const cut = truncateEcho("x".repeat(10_000));
    expect(cut.length).toBeLessThan(260);
    expect(cut).toMatch(/^x{200}\.\.\.\[truncated, 9800 more chars\]$/);
  });

  it("never splits a surrogate pair (grpc-js would fail to encode the status)", () => {
    const cut = truncateEcho("a" + "🌸".repeat(200), 200);
    expect(() => encodeURI(cut)).not.toThrow();
  });
});
