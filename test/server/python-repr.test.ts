/**
 * Python repr / pprint.pformat against output produced by CPython itself
 * (fixtures/pformat-python.json, made by fixtures/generate_vectors.py).
 */
import { PyTuple, type PyValue, pformat, pyFloatRepr, pyRepr, pyStrRepr } from "../../src/server/python-repr";
import vectors from "./fixtures/pformat-python.json";

const t = (...items: PyValue[]): PyTuple => new PyTuple(items);
const rounds = (pairs: Array<[number, PyValue]>): PyValue[] => pairs.map(([r, v]) => t(BigInt(r), v));
const dict = (entries: Record<string, PyValue>): Map<string, PyValue> => new Map(Object.entries(entries));
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** The same Python values generate_vectors.py formats (ints as bigint, floats as number). */
const cases: Record<keyof typeof vectors.pformat, Map<string, PyValue>> = {
  spec: dict({
    train_accuracy: rounds([
      [1, 0.25],
      [2, 0.25],
    ]),
    train_loss: rounds([
      [1, 0.5],
      [2, 0.5],
    ]),
    val_accuracy: rounds([
      [1, 0.125],
      [2, 0.125],
    ]),
    val_loss: rounds([
      [1, 1.0],
      [2, 1.0],
    ]),
  }),
  short: dict({ accuracy: rounds([[1, 0.5]]) }),
  long_list: dict({ accuracy: rounds(range(1, 7).map((r) => [r, r / 7])) }),
  long_key_mix: dict({
    a_very_long_metric_name_that_takes_space: rounds([
      [1, 0.123456789],
      [2, 0.987654321],
    ]),
    b: rounds([
      [1, true],
      [2, "text value"],
    ]),
    c: rounds([
      [1, 10n],
      [2, -3n],
    ]),
  }),
  long_str: dict({
    note: rounds([
      [1, "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore"],
    ]),
  }),
  quotes: dict({
    "it's": rounds([
      [1, 'say "hi"'],
      [2, "it's"],
    ]),
    "tab\tkey": rounds([[1, "line\nbreak"]]),
  }),
  unicode: dict({
    "\u00e9": rounds([
      [1, "na\u00efve \u2603"],
      [2, "\u2028x"],
    ]),
    A: rounds([[1, 1e-5]]),
  }),
  bytes: dict({ blob: rounds([[1, Uint8Array.from([0, 0x61, 0x62, 0x27, 0x63])]]) }),
  many_rounds: dict({
    loss: rounds(range(1, 24).map((r) => [r, 0.5 + r * 0.001])),
    acc: rounds(range(1, 3).map((r) => [r, BigInt(r)])),
  }),
};

describe("pyFloatRepr", () => {
  it.each(vectors.floats.map(([value, repr]) => [repr as string, value]))("formats %s like CPython", (repr, value) => {
    const x = typeof value === "string" ? (value === "inf" ? Infinity : -Infinity) : (value as number);
    expect(pyFloatRepr(x)).toBe(repr);
  });

  it("formats NaN as nan", () => {
    expect(pyFloatRepr(NaN)).toBe("nan");
  });
});

describe("pyRepr", () => {
  it("writes tuples, lists, ints, bools and None as Python does", () => {
    expect(pyRepr(t(1n))).toBe("(1,)");
    expect(pyRepr([t(1n, 0.5), null, false, -7n])).toBe("[(1, 0.5), None, False, -7]");
    expect(pyRepr(dict({ b: 1n, a: 2n }))).toBe("{'a': 2, 'b': 1}");
  });

  it("escapes strings as Python does", () => {
    expect(pyStrRepr("a'b")).toBe(`"a'b"`);
    expect(pyStrRepr(`a'b"c`)).toBe(`'a\\'b"c'`);
    expect(pyStrRepr("\x01\x7f\\")).toBe("'\\x01\\x7f\\\\'");
    expect(pyStrRepr("\u00a0")).toBe("'\\xa0'");
  });
});

describe("pformat (width 80)", () => {
  it.each(Object.keys(vectors.pformat) as Array<keyof typeof vectors.pformat>)("matches CPython for %s", (name) => {
    expect(pformat(cases[name])).toBe(vectors.pformat[name]);
  });
});
