import { once } from "node:events";
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { Writable } from "node:stream";
import { Allowlist, type AllowlistChange } from "../../src/auth/allowlist";
import { loadPublicKeyFile } from "../../src/auth/keys";
import { InvalidConfigError, InvalidKeyFileError } from "../../src/core/errors";
import { createLogger } from "../../src/core/logger";
import { csvElementOf, type KeyDir, makeKeyDir } from "./key-helpers";

let keys: KeyDir;
let elements: string[];
let pems: string[];
const open: Allowlist[] = [];

beforeAll(() => {
  keys = makeKeyDir();
  const files = ["k1", "k2", "k3"].map((n) => keys.sshKeygen(n, ["-t", "ecdsa", "-b", "384"]));
  elements = files.map((f) => csvElementOf(`${f}.pub`));
  pems = files.map((f) => loadPublicKeyFile(`${f}.pub`));
});

afterEach(() => {
  for (const list of open.splice(0)) list.close();
});

afterAll(() => keys?.cleanup());

function writeCsv(name: string, indices: number[]): string {
  const file = keys.path(name);
  writeFileSync(file, indices.map((i) => elements[i]).join(",") + "\n");
  return file;
}

function track(list: Allowlist): Allowlist {
  open.push(list);
  return list;
}

/** A pino logger whose parsed lines land in `lines`. */
function captureLogger(): { logger: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean))
        lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: createLogger({ level: "debug" }, sink), lines };
}

test("loads the CSV and answers membership by PEM text or bytes", () => {
  const list = track(Allowlist.fromCsvFile(writeCsv("basic.csv", [0, 1])));
  expect(list.size).toBe(2);
  expect(list.has(pems[0]!)).toBe(true);
  expect(list.has(Buffer.from(pems[1]!))).toBe(true);
  expect(list.has(new Uint8Array(Buffer.from(pems[1]!)))).toBe(true);
  expect(list.has(pems[2]!)).toBe(false);
  // Exact bytes: the same key with a different line ending is not the canonical form.
  expect(list.has(pems[0]!.replace(/\n/g, "\r\n"))).toBe(false);
  expect(list.filePath).toBe(keys.path("basic.csv"));
});

test("a missing or malformed file fails at load time", () => {
  expect(() => Allowlist.fromCsvFile(keys.path("absent.csv"))).toThrow(InvalidKeyFileError);
  const bad = keys.path("bad-initial.csv");
  writeFileSync(bad, "not a key\n");
  expect(() => Allowlist.fromCsvFile(bad)).toThrow(InvalidKeyFileError);
});

test("an empty allowlist loads with a warning", () => {
  const { logger, lines } = captureLogger();
  const file = keys.path("empty.csv");
  writeFileSync(file, "");
  const list = track(Allowlist.fromCsvFile(file, { logger }));
  expect(list.size).toBe(0);
  expect(lines.some((l) => l["level"] === 40 && String(l["msg"]).includes("no known public keys"))).toBe(true);
});

test("reload returns and emits what changed", () => {
  const file = writeCsv("reload.csv", [0, 1]);
  const list = track(Allowlist.fromCsvFile(file));
  const events: AllowlistChange[] = [];
  list.on("change", (c: AllowlistChange) => events.push(c));

  writeCsv("reload.csv", [1, 2]);
  expect(list.reload()).toEqual({ added: [pems[2]], removed: [pems[0]] });
  expect(events).toEqual([{ added: [pems[2]], removed: [pems[0]] }]);
  expect(list.has(pems[0]!)).toBe(false);
  expect(list.has(pems[2]!)).toBe(true);

  // Same content: nothing changed, no event.
  expect(list.reload()).toEqual({ added: [], removed: [] });
  expect(events).toHaveLength(1);
});

test("a malformed or missing file on reload throws and keeps the previous list", () => {
  const file = writeCsv("keep.csv", [0, 1]);
  const list = track(Allowlist.fromCsvFile(file));
  const events: AllowlistChange[] = [];
  list.on("change", (c: AllowlistChange) => events.push(c));

  writeFileSync(file, `${elements[0]},ecdsa-sha2-nistp384 AAAAtruncated\n`);
  expect(() => list.reload()).toThrow(InvalidKeyFileError);
  rmSync(file);
  expect(() => list.reload()).toThrow(/does not exist/);

  expect(list.size).toBe(2);
  expect(list.has(pems[0]!)).toBe(true);
  expect(list.has(pems[1]!)).toBe(true);
  expect(events).toHaveLength(0);
});

test("a list not loaded from a file cannot be reloaded", () => {
  const list = new Allowlist([pems[0]!]);
  expect(list.has(pems[0]!)).toBe(true);
  expect(() => list.reload()).toThrow(InvalidConfigError);
});

describe("watching", () => {
  test("picks up a file replaced by rename, as editors do", async () => {
    const file = writeCsv("watched.csv", [0]);
    const list = track(Allowlist.fromCsvFile(file, { watch: true, watchIntervalMs: 20 }));
    const changed = once(list, "change") as Promise<[AllowlistChange]>;
    const temp = writeCsv("watched.csv.tmp", [0, 2]);
    renameSync(temp, file);
    const [change] = await changed;
    expect(change).toEqual({ added: [pems[2]], removed: [] });
    expect(list.has(pems[2]!)).toBe(true);
  });

  test("logs a broken edit, keeps the list, and recovers on the next good edit", async () => {
    const { logger, lines } = captureLogger();
    const file = writeCsv("watched-broken.csv", [0, 1]);
    const list = track(Allowlist.fromCsvFile(file, { watch: true, watchIntervalMs: 20, logger }));

    writeFileSync(file, "garbage that is not a key, at all\n");
    await waitFor(() => lines.some((l) => l["level"] === 50));
    const error = lines.find((l) => l["level"] === 50)!;
    expect(String(error["msg"])).toContain("keeping the previous 2 key(s)");
    expect(list.size).toBe(2);

    const changed = once(list, "change") as Promise<[AllowlistChange]>;
    writeCsv("watched-broken.csv", [1]);
    const [change] = await changed;
    expect(change).toEqual({ added: [], removed: [pems[0]] });
  });

  test("close() stops watching", async () => {
    const file = writeCsv("closed.csv", [0]);
    const list = Allowlist.fromCsvFile(file, { watch: true, watchIntervalMs: 20 });
    list.close();
    list.close(); // idempotent
    const events: AllowlistChange[] = [];
    list.on("change", (c: AllowlistChange) => events.push(c));
    writeCsv("closed.csv", [0, 1]);
    // A second, still-watching list on the same file proves the edit was observable.
    const witness = track(Allowlist.fromCsvFile(keys.path("closed.csv"), { watch: true, watchIntervalMs: 20 }));
    const witnessed = once(witness, "change");
    writeCsv("closed.csv", [0, 1, 2]);
    await witnessed;
    expect(events).toHaveLength(0);
    expect(list.size).toBe(1);
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 10));
}
