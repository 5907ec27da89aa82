import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidConfigError } from "../../src/core/errors";
import { parseNodeConfig, parseTomlScalar } from "../../src/supernode/node-config";

describe("parseNodeConfig", () => {
  it("parses Flower's example: ints to bigint, quoted strings, floats and booleans", () => {
    expect(
      parseNodeConfig('key1="value1",partition-id=0,num-partitions=100,lr=0.01,iid=true,big=9007199254740993'),
    ).toEqual({
      key1: "value1",
      "partition-id": 0n,
      "num-partitions": 100n,
      lr: 0.01,
      iid: true,
      big: 9007199254740993n,
    });
  });

  it("gives {} for no value or an empty one", () => {
    expect(parseNodeConfig(undefined)).toEqual({});
    expect(parseNodeConfig("")).toEqual({});
    expect(parseNodeConfig("  ")).toEqual({});
  });

  it("accepts spaces around '=', TOML number forms and string escapes", () => {
    expect(parseNodeConfig(" a = -3 , b=1e3, c=0x1F, d=1_000, e = \"tab\\there\", f='C:\\path', g=-inf")).toEqual({
      a: -3n,
      b: 1000,
      c: 31n,
      d: 1000n,
      e: "tab\there",
      f: "C:\\path",
      g: -Infinity,
    });
  });

  it("keeps commas and '=' inside quoted strings", () => {
    expect(parseNodeConfig('name="a,b=c",n=1')).toEqual({ name: "a,b=c", n: 1n });
  });

  it("flattens quoted and dotted keys", () => {
    expect(parseNodeConfig('data.path="/tmp","my key"=1')).toEqual({ "data.path": "/tmp", "my key": 1n });
  });

  it.each([
    ["an unquoted string", "name=alice", /cannot parse alice; quote text values/],
    ["a missing value", "a=", /missing value/],
    ["no '='", "justakey", /expected key=value/],
    ["a list", "a=[1,2]", /only scalar values/],
    ["a duplicate key", "a=1,a=2", /given twice/],
    ["an unterminated string", 'a="x', /unterminated string/],
    ["a leading-zero integer", "a=007", /cannot parse 007/],
  ])("rejects %s with a clear InvalidConfigError", (_what, text, message) => {
    expect(() => parseNodeConfig(text)).toThrow(InvalidConfigError);
    expect(() => parseNodeConfig(text)).toThrow(message);
  });

  it("reads a .toml file, flattening tables", () => {
    const dir = mkdtempSync(join(tmpdir(), "flwr-ts-node-config-"));
    try {
      const file = join(dir, "node.toml");
      writeFileSync(file, '# node settings\npartition-id = 1\n\n[data]\npath = "/data" # where\nshuffle = false\n');
      expect(parseNodeConfig(file)).toEqual({ "partition-id": 1n, "data.path": "/data", "data.shuffle": false });
      expect(() => parseNodeConfig(join(dir, "missing.toml"))).toThrow(/Cannot read --node-config file/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("parseTomlScalar", () => {
  it("keeps floats as numbers and integers as bigints", () => {
    expect(parseTomlScalar("1.0")).toBe(1);
    expect(typeof parseTomlScalar("1.0")).toBe("number");
    expect(parseTomlScalar("1")).toBe(1n);
    expect(parseTomlScalar("false")).toBe(false);
    expect(Number.isNaN(parseTomlScalar("nan"))).toBe(true);
    expect(parseTomlScalar('"\\u00e9"')).toBe("é");
  });
});
