import { createPrivateKey, createPublicKey, type KeyObject, randomBytes } from "node:crypto";
import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { InvalidKeyFileError } from "../../src/core/errors";
import {
  assertKeyPair,
  canonicalizePublicPem,
  curveOf,
  loadKeyPairFiles,
  loadPrivateKeyFile,
  loadPublicKeyFile,
  parseOpenSshPrivateKey,
  parseOpenSshPublicKey,
  publicPemOf,
  sshFingerprint,
} from "../../src/auth/keys";
import { loadAllowlistCsv } from "../../src/auth/allowlist-csv";
import { decodeBase64UrlLikePython } from "../../src/auth/crypto";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { csvElementOf, type KeyDir, makeKeyDir, run } from "./key-helpers";
import * as v from "./vectors";
import { generateEcKeyPair } from "../helpers/ec-keys";

let fx: Fixtures;
let keys: KeyDir;

beforeAll(() => {
  fx = generateFixtures(2);
  keys = makeKeyDir();
});

afterAll(() => {
  fx?.cleanup();
  keys?.cleanup();
});

// --- SSH wire-format builders, to make well-formed and deliberately broken keys -------------

function sshString(data: Buffer | string): Buffer {
  const bytes = typeof data === "string" ? Buffer.from(data, "latin1") : data;
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function pointOf(key: KeyObject): Buffer {
  const jwk = key.export({ format: "jwk" });
  return Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, "base64url"), Buffer.from(jwk.y!, "base64url")]);
}

function publicBlob(type: string, curve: string, point: Buffer, trailing = Buffer.alloc(0)): Buffer {
  return Buffer.concat([sshString(type), sshString(curve), sshString(point), trailing]);
}

interface PrivateKeyParts {
  cipher?: string;
  checkints?: [number, number];
  type?: string;
  curve?: string;
  point?: Buffer;
  outerPoint?: Buffer;
  d: Buffer;
  padding?: Buffer;
  count?: number;
}

function openSshPrivateKey(parts: PrivateKeyParts): string {
  const type = parts.type ?? "ecdsa-sha2-nistp384";
  const curve = parts.curve ?? "nistp384";
  const point = parts.point!;
  const [c1, c2] = parts.checkints ?? [0x12345678, 0x12345678];
  let section = Buffer.concat([
    uint32(c1),
    uint32(c2),
    sshString(type),
    sshString(curve),
    sshString(point),
    sshString(parts.d),
    sshString(""),
  ]);
  const padding = parts.padding ?? Buffer.from(Array.from({ length: (8 - (section.length % 8)) % 8 }, (_, i) => i + 1));
  section = Buffer.concat([section, padding]);
  const body = Buffer.concat([
    Buffer.from("openssh-key-v1\0", "latin1"),
    sshString(parts.cipher ?? "none"),
    sshString(parts.cipher && parts.cipher !== "none" ? "bcrypt" : "none"),
    sshString(""),
    uint32(parts.count ?? 1),
    sshString(publicBlob(type, curve, parts.outerPoint ?? point)),
    sshString(section),
  ]);
  const lines = body
    .toString("base64")
    .match(/.{1,70}/g)!
    .join("\n");
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines}\n-----END OPENSSH PRIVATE KEY-----\n`;
}

/** A non-negative integer as an SSH mpint: minimal, with a 0x00 prefix when the top bit is set. */
function mpint(value: Buffer): Buffer {
  let start = 0;
  while (start < value.length && value[start] === 0) start++;
  const magnitude = value.subarray(start);
  return magnitude.length > 0 && magnitude[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), magnitude]) : magnitude;
}

function rawScalar(key: KeyObject): Buffer {
  return Buffer.from(key.export({ format: "jwk" }).d!, "base64url");
}

// ---------------------------------------------------------------------------------------------

describe("key test vectors (test/auth/vectors.ts)", () => {
  test("the client OpenSSH private key (47-byte d) loads and yields the canonical PEM", () => {
    const key = parseOpenSshPrivateKey(v.CLIENT_PRIVATE_OPENSSH);
    expect(rawScalar(key).toString("hex")).toBe("00" + "11".repeat(47));
    expect(publicPemOf(key)).toBe(v.CLIENT_CANONICAL_PEM);
    expect(Buffer.byteLength(publicPemOf(key))).toBe(215);
  });

  test("the server OpenSSH private key loads and matches its public key", () => {
    const key = parseOpenSshPrivateKey(v.SERVER_PRIVATE_OPENSSH);
    expect(rawScalar(key).toString("hex")).toBe("00" + "22".repeat(47));
    const serverPem = parseOpenSshPublicKey(v.SERVER_PUBLIC_OPENSSH);
    expect(publicPemOf(key)).toBe(serverPem);
    expect(serverPem).toBe(decodeBase64UrlLikePython(v.SERVER_PUBLIC_KEY_HEADER).toString());
  });

  test("OpenSSH public key lines -> the exact canonical PEM", () => {
    expect(parseOpenSshPublicKey(v.CLIENT_PUBLIC_OPENSSH)).toBe(v.CLIENT_CANONICAL_PEM);
  });

  test("comment, trailing space (ssh-keygen -C ''), tabs and surrounding whitespace are tolerated", () => {
    for (const line of [
      v.CLIENT_PUBLIC_OPENSSH + " user@host",
      v.CLIENT_PUBLIC_OPENSSH + " ",
      v.CLIENT_PUBLIC_OPENSSH + "\n",
      v.CLIENT_PUBLIC_OPENSSH.replace(" ", "\t"),
      "  " + v.CLIENT_PUBLIC_OPENSSH,
    ]) {
      expect(parseOpenSshPublicKey(line)).toBe(v.CLIENT_CANONICAL_PEM);
    }
  });

  test("the SSH fingerprint is what ssh-keygen -l prints", () => {
    const pub = join(keys.dir, "vector.pub");
    writeFileSync(pub, v.CLIENT_PUBLIC_OPENSSH + "\n");
    const printed = run("ssh-keygen", ["-l", "-f", pub]).split(/\s+/)[1];
    expect(sshFingerprint(v.CLIENT_CANONICAL_PEM)).toBe(printed);
  });
});

describe("OpenSSH private key encodings", () => {
  const { privateKey } = generateEcKeyPair("P-384");
  const d = rawScalar(privateKey);
  const point = pointOf(privateKey);
  const pem = publicPemOf(privateKey);

  test("an mpint with an extra leading 0x00 or without leading zeros is accepted", () => {
    expect(
      publicPemOf(parseOpenSshPrivateKey(openSshPrivateKey({ point, d: Buffer.concat([Buffer.from([0]), d]) }))),
    ).toBe(pem);
    const small = parseOpenSshPrivateKey(v.CLIENT_PRIVATE_OPENSSH);
    const smallD = rawScalar(small).subarray(1); // 47 bytes, high bit clear
    expect(publicPemOf(parseOpenSshPrivateKey(openSshPrivateKey({ point: pointOf(small), d: smallD })))).toBe(
      v.CLIENT_CANONICAL_PEM,
    );
    expect(
      publicPemOf(
        parseOpenSshPrivateKey(
          openSshPrivateKey({ point: pointOf(small), d: Buffer.concat([Buffer.alloc(3), smallD]) }),
        ),
      ),
    ).toBe(v.CLIENT_CANONICAL_PEM);
  });

  test.each([
    ["differing check integers", { checkints: [1, 2] as [number, number] }, /check integers/],
    [
      "a public point that does not match d",
      { point: pointOf(generateEcKeyPair("P-384").privateKey) },
      /does not match/,
    ],
    [
      "a header public key that does not match",
      { outerPoint: pointOf(generateEcKeyPair("P-384").privateKey) },
      /does not match/,
    ],
    ["bad padding", { padding: Buffer.from([1, 2, 4]) }, /padding/],
    ["two keys", { count: 2 }, /exactly one/],
    ["a scalar longer than the field", { d: Buffer.concat([Buffer.from([1]), Buffer.alloc(48)]) }, /longer than 48/],
    ["a zero scalar", { d: Buffer.alloc(0) }, /out of range/],
    ["a negative mpint", { d: Buffer.from([0x80, 1]) }, /negative/],
    ["a curve that disagrees with the type", { curve: "nistp256" }, /curve "nistp256"/],
  ])("rejects %s with InvalidKeyFileError", (_name, change, message) => {
    const text = openSshPrivateKey({ point, d: mpint(d), ...change });
    expect(() => parseOpenSshPrivateKey(text, "bad_key")).toThrow(InvalidKeyFileError);
    expect(() => parseOpenSshPrivateKey(text, "bad_key")).toThrow(message);
    expect(() => parseOpenSshPrivateKey(text, "bad_key")).toThrow(/in bad_key/);
  });

  test("a truncated key is a clear error", () => {
    const lines = v.CLIENT_PRIVATE_OPENSSH.split("\n");
    const truncated = [lines[0], lines[1], lines[2], "-----END OPENSSH PRIVATE KEY-----"].join("\n");
    expect(() => parseOpenSshPrivateKey(truncated)).toThrow(/truncated|base64/);
  });

  test("garbage is not a private key", () => {
    expect(() => parseOpenSshPrivateKey("hello")).toThrow(/not a private key/);
  });
});

describe("keys made by ssh-keygen and openssl", () => {
  test("P-256, P-384 and P-521 pairs load and pair-check", () => {
    for (const bits of ["256", "384", "521"]) {
      const file = keys.sshKeygen(`ecdsa${bits}`, ["-t", "ecdsa", "-b", bits]);
      const pair = loadKeyPairFiles(file, `${file}.pub`);
      expect(curveOf(pair.privateKey)).toBe(`P-${bits}`);
      expect(curveOf(pair.publicKeyPem)).toBe(`P-${bits}`);
      expect(pair.publicKeyPem).toBe(publicPemOf(pair.privateKey));
    }
  });

  test("ed25519 and RSA keys are rejected: EC keys are required", () => {
    for (const [name, args] of [
      ["ed25519", ["-t", "ed25519"]],
      ["rsa", ["-t", "rsa", "-b", "2048"]],
    ] as const) {
      const file = keys.sshKeygen(name, [...args]);
      for (const load of [() => loadPrivateKeyFile(file), () => loadPublicKeyFile(`${file}.pub`)]) {
        expect(load).toThrow(InvalidKeyFileError);
        expect(load).toThrow(/elliptic-curve \(ECDSA\) key/);
      }
      expect(() => parseOpenSshPublicKey(csvElementOf(`${file}.pub`))).toThrow(/elliptic-curve/);
    }
  });

  test("a passphrase-protected key gets a clear error", () => {
    const file = keys.sshKeygen("encrypted", ["-t", "ecdsa", "-b", "384"], "secret");
    expect(() => loadPrivateKeyFile(file)).toThrow(/passphrase-protected keys are not supported/);
    const pemFile = keys.path("encrypted.p8");
    run("openssl", ["pkcs8", "-topk8", "-in", keyAsPem(file, "secret"), "-out", pemFile, "-passout", "pass:secret"]);
    expect(() => loadPrivateKeyFile(pemFile)).toThrow(/passphrase-protected keys are not supported/);
  });

  test("PEM private keys (SEC1 and PKCS#8) and PEM public keys load to the same key", () => {
    const file = keys.sshKeygen("pem-source", ["-t", "ecdsa", "-b", "384"]);
    const expected = loadKeyPairFiles(file, `${file}.pub`).publicKeyPem;
    const sec1 = keyAsPem(file);
    expect(keys.read("pem-source.sec1")).toContain("BEGIN EC PRIVATE KEY");
    expect(publicPemOf(loadPrivateKeyFile(sec1))).toBe(expected);
    const pkcs8 = keys.path("pem-source.p8");
    run("openssl", ["pkcs8", "-topk8", "-nocrypt", "-in", sec1, "-out", pkcs8]);
    expect(publicPemOf(loadPrivateKeyFile(pkcs8))).toBe(expected);
    const pubPem = keys.path("pem-source.pub.pem");
    writeFileSync(pubPem, run("ssh-keygen", ["-e", "-m", "PKCS8", "-f", `${file}.pub`]));
    expect(loadPublicKeyFile(pubPem)).toBe(expected);
    expect(loadKeyPairFiles(pkcs8, pubPem).publicKeyPem).toBe(expected);
  });

  test("the canonical PEM, written from (x, y), is OpenSSL's own SPKI PEM on every curve (coordinates with leading zero bytes too)", () => {
    let leadingZero = 0;
    for (const namedCurve of ["P-256", "P-384", "P-521"]) {
      for (let i = 0; i < 96; i++) {
        const { privateKey, publicKey } = generateEcKeyPair(namedCurve);
        const openssl = publicKey.export({ type: "spki", format: "pem" }) as string;
        const { x } = publicKey.export({ format: "jwk" });
        if (Buffer.from(x ?? "", "base64url")[0] === 0) leadingZero++;
        expect(publicPemOf(privateKey)).toBe(openssl);
        expect(publicPemOf(publicKey)).toBe(openssl);
        expect(canonicalizePublicPem(openssl)).toBe(openssl);
      }
    }
    // 288 keys: a zero first byte of x is all but certain (P-521's x starts with 0 or 1 always).
    expect(leadingZero).toBeGreaterThan(0);
  });

  test("a compressed-point PEM public key is canonicalized to the uncompressed form", () => {
    const file = keys.sshKeygen("compressed", ["-t", "ecdsa", "-b", "384"]);
    const expected = loadPublicKeyFile(`${file}.pub`);
    const compressed = run("openssl", ["ec", "-in", keyAsPem(file), "-pubout", "-conv_form", "compressed"]);
    expect(compressed).not.toBe(expected);
    expect(canonicalizePublicPem(compressed)).toBe(expected);
  });

  test("a private key file given as the public key is refused", () => {
    const file = keys.sshKeygen("swapped", ["-t", "ecdsa", "-b", "384"]);
    expect(() => loadPublicKeyFile(keyAsPem(file))).toThrow(/not a public key file/);
  });

  /** Converts an OpenSSH private key to PEM SEC1 (`ssh-keygen -p -m PEM`) and returns its path. */
  function keyAsPem(file: string, passphrase = ""): string {
    const base = file.slice(keys.dir.length + 1);
    const copy = keys.path(`${base}.sec1`);
    copyFileSync(file, copy);
    run("ssh-keygen", ["-q", "-p", "-m", "PEM", "-P", passphrase, "-N", "", "-f", copy]);
    return copy;
  }
});

describe("public key validation", () => {
  const { privateKey } = generateEcKeyPair("P-384");
  const point = pointOf(privateKey);
  const line = (blob: Buffer, type = "ecdsa-sha2-nistp384"): string => `${type} ${blob.toString("base64")}`;

  test("a well-formed hand-built line is accepted", () => {
    expect(parseOpenSshPublicKey(line(publicBlob("ecdsa-sha2-nistp384", "nistp384", point)))).toBe(
      publicPemOf(privateKey),
    );
  });

  test("a compressed point in the blob is canonicalized to the uncompressed form", () => {
    const compressed = Buffer.concat([Buffer.from([2 + (point[point.length - 1]! & 1)]), point.subarray(1, 49)]);
    expect(parseOpenSshPublicKey(line(publicBlob("ecdsa-sha2-nistp384", "nistp384", compressed)))).toBe(
      publicPemOf(privateKey),
    );
  });

  test("every curve: points are accepted or refused as OpenSSL's SPKI import decides, with the same point", () => {
    // The allowlist validates points without making a KeyObject (src/auth/keys.ts); this holds it
    // to what importing the SPKI does, on valid, compressed (either sign), off-curve points and
    // coordinates at or above the field prime.
    const curves = [
      {
        name: "P-256",
        ssh: "nistp256",
        oid: "06082a8648ce3d030107",
        bytes: 32,
        p: 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n,
      },
      {
        name: "P-384",
        ssh: "nistp384",
        oid: "06052b81040022",
        bytes: 48,
        p: 2n ** 384n - 2n ** 128n - 2n ** 96n + 2n ** 32n - 1n,
      },
      { name: "P-521", ssh: "nistp521", oid: "06052b81040023", bytes: 66, p: 2n ** 521n - 1n },
    ];
    const derLength = (n: number): Buffer =>
      Buffer.from(n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff]);
    const der = (tag: number, ...parts: Buffer[]): Buffer => {
      const body = Buffer.concat(parts);
      return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
    };
    const fieldBytes = (n: bigint, bytes: number): Buffer =>
      Buffer.from(n.toString(16).padStart(2 * bytes, "0"), "hex");
    let accepted = 0;
    let refused = 0;
    for (const curve of curves) {
      const opensslView = (candidate: Buffer): string | undefined => {
        const spki = der(
          0x30,
          der(0x30, Buffer.from("06072a8648ce3d0201", "hex"), Buffer.from(curve.oid, "hex")),
          der(0x03, Buffer.from([0]), candidate),
        );
        try {
          return publicPemOf(createPublicKey({ key: spki, format: "der", type: "spki" }));
        } catch {
          return undefined;
        }
      };
      const ours = (candidate: Buffer): string | undefined => {
        try {
          return parseOpenSshPublicKey(
            line(publicBlob(`ecdsa-sha2-${curve.ssh}`, curve.ssh, candidate), `ecdsa-sha2-${curve.ssh}`),
          );
        } catch (err) {
          expect(err).toBeInstanceOf(InvalidKeyFileError);
          return undefined;
        }
      };
      for (let i = 0; i < 8; i++) {
        const valid = pointOf(generateEcKeyPair(curve.name).privateKey);
        const x = valid.subarray(1, 1 + curve.bytes);
        const y = valid.subarray(1 + curve.bytes);
        const odd = y[y.length - 1]! & 1;
        const xPlusP = BigInt(`0x${x.toString("hex")}`) + curve.p;
        const yPlusP = BigInt(`0x${y.toString("hex")}`) + curve.p;
        const fits = (n: bigint): boolean => n < 2n ** BigInt(8 * curve.bytes);
        const candidates = [
          valid,
          Buffer.concat([Buffer.from([2 + odd]), x]),
          Buffer.concat([Buffer.from([3 - odd]), x]),
          Buffer.concat([valid.subarray(0, 5), Buffer.from([valid[5]! ^ 1]), valid.subarray(6)]),
          Buffer.concat([Buffer.from([2]), randomBytes(curve.bytes)]),
          Buffer.concat([Buffer.from([4]), fieldBytes(curve.p, curve.bytes), y]),
          ...(fits(xPlusP) ? [Buffer.concat([Buffer.from([4]), fieldBytes(xPlusP, curve.bytes), y])] : []),
          ...(fits(yPlusP) ? [Buffer.concat([Buffer.from([4]), x, fieldBytes(yPlusP, curve.bytes)])] : []),
          ...(fits(xPlusP) ? [Buffer.concat([Buffer.from([2 + odd]), fieldBytes(xPlusP, curve.bytes)])] : []),
        ];
        for (const candidate of candidates) {
          const expected = opensslView(candidate);
          expect(ours(candidate)).toBe(expected);
          if (expected === undefined) refused++;
          else accepted++;
        }
      }
    }
    // Both outcomes were exercised on every kind of input.
    expect(accepted).toBeGreaterThan(curves.length * 8);
    expect(refused).toBeGreaterThan(curves.length * 8);
  });

  test.each([
    [
      "a blob type that differs from the line",
      line(publicBlob("ecdsa-sha2-nistp384", "nistp384", point), "ecdsa-sha2-nistp256"),
      /"ecdsa-sha2-nistp384" but the line says/,
    ],
    [
      "a curve that differs from the type",
      line(publicBlob("ecdsa-sha2-nistp384", "nistp521", point)),
      /names curve "nistp521"/,
    ],
    ["trailing bytes", line(publicBlob("ecdsa-sha2-nistp384", "nistp384", point, Buffer.from([0]))), /trailing bytes/],
    [
      "a point not on the curve",
      line(
        publicBlob(
          "ecdsa-sha2-nistp384",
          "nistp384",
          Buffer.concat([point.subarray(0, 60), Buffer.from([point[60]! ^ 1]), point.subarray(61)]),
        ),
      ),
      /not on curve/,
    ],
    [
      "a point of the wrong length",
      line(publicBlob("ecdsa-sha2-nistp384", "nistp384", point.subarray(0, 65))),
      /wrong length/,
    ],
    ["a truncated blob", line(publicBlob("ecdsa-sha2-nistp384", "nistp384", point).subarray(0, 40)), /truncated/],
    ["invalid base64", "ecdsa-sha2-nistp384 AAAA*AAA", /not valid base64/],
    ["no key data", "ecdsa-sha2-nistp384", /no base64 key data/],
    ["an unknown key type", "ssh-foo AAAA", /not an OpenSSH public key/],
    ["an empty line", "   ", /empty public key/],
  ])("rejects %s", (_name, text, message) => {
    expect(() => parseOpenSshPublicKey(text, "keys.csv")).toThrow(InvalidKeyFileError);
    expect(() => parseOpenSshPublicKey(text, "keys.csv")).toThrow(message);
  });

  test("a missing key file names the file", () => {
    const missing = keys.path("nope.pub");
    expect(() => loadPublicKeyFile(missing)).toThrow(InvalidKeyFileError);
    expect(() => loadPublicKeyFile(missing)).toThrow(`${missing}: the file does not exist`);
    expect(() => loadPrivateKeyFile(missing)).toThrow(/does not exist/);
  });
});

describe("fixtures from scripts/generate.sh", () => {
  test("the SuperLink and SuperNode key pairs load and belong together", () => {
    const server = loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey);
    expect(curveOf(server.privateKey)).toBe("P-384");
    expect(Buffer.byteLength(server.publicKeyPem)).toBe(215);
    fx.clientPrivateKeys.forEach((priv, i) => {
      expect(loadKeyPairFiles(priv, fx.clientPublicKeys[i]!).publicKeyPem).toBe(
        loadPublicKeyFile(fx.clientPublicKeys[i]!),
      );
    });
  });

  test("a mismatched pair is a clear error naming both files", () => {
    expect(() => loadKeyPairFiles(fx.superlinkPrivateKey, fx.clientPublicKeys[0]!)).toThrow(InvalidKeyFileError);
    expect(() => loadKeyPairFiles(fx.superlinkPrivateKey, fx.clientPublicKeys[0]!)).toThrow(
      `${fx.clientPublicKeys[0]} is not the public key of ${fx.superlinkPrivateKey}`,
    );
    const other = loadPrivateKeyFile(fx.clientPrivateKeys[1]!);
    expect(() => assertKeyPair(other, loadPublicKeyFile(fx.clientPublicKeys[0]!))).toThrow(/must be one key pair/);
  });

  test("the allowlist CSV holds exactly the client public keys", () => {
    const allowlist = loadAllowlistCsv(fx.allowlistCsv);
    expect(allowlist).toEqual(new Set(fx.clientPublicKeys.map((p) => loadPublicKeyFile(p))));
    expect(allowlist.has(loadPublicKeyFile(fx.superlinkPublicKey))).toBe(false);
  });
});

describe("loadAllowlistCsv", () => {
  let a: string;
  let b: string;
  let c: string;
  let expected: Set<string>;

  beforeAll(() => {
    const files = ["csv-a", "csv-b", "csv-c"].map((n) => keys.sshKeygen(n, ["-t", "ecdsa", "-b", "384"]));
    [a, b, c] = files.map((f) => csvElementOf(`${f}.pub`)) as [string, string, string];
    expected = new Set(files.map((f) => loadPublicKeyFile(`${f}.pub`)));
  });

  const load = (name: string, text: string): Set<string> => {
    const file = keys.path(name);
    writeFileSync(file, text);
    return loadAllowlistCsv(file);
  };

  test.each([
    ["one line with a trailing newline", () => `${a},${b},${c}\n`],
    ["one line without a newline", () => `${a},${b},${c}`],
    ["one key per line", () => `${a}\n${b}\n${c}\n`],
    ["blank lines and CRLF", () => `\r\n${a},${b}\r\n\r\n${c}\r\n\r\n`],
    ["quoted fields", () => `"${a}","${b}"\n"${c}"\n`],
    ["spaces around fields and a trailing comma", () => ` ${a} , ${b},\n\t${c}\t\n`],
    ["OpenSSH comments after the key", () => `${a} alice@host,${b} bob\n${c}\n`],
  ])("accepts %s", (_name, text) => {
    expect(load("variant.csv", text())).toEqual(expected);
  });

  test("rows are numbered by the line they start on, across quoted fields holding line breaks", () => {
    const file = keys.path("lines.csv");
    // The quoted CRLF is one line break.
    writeFileSync(file, `"${a}\r\n",${b}\r\n${c},ecdsa-sha2-nistp384 AAAAbroken\n`);
    expect(() => loadAllowlistCsv(file)).toThrow(`${file} (row 3, column 2)`);
    // LF, and a CR before the closing quote, are one each; an empty line is a row.
    writeFileSync(file, `"${a}\n\r",${b}\n\n"${c}\r"\r\n,ecdsa-sha2-nistp384 AAAAbroken\n`);
    expect(() => loadAllowlistCsv(file)).toThrow(`${file} (row 7, column 2)`);
  });

  test("an empty file is an empty allowlist", () => {
    expect(load("empty.csv", "").size).toBe(0);
    expect(load("blank.csv", "\n\n").size).toBe(0);
  });

  test("a bad element names the file, row and column", () => {
    const file = keys.path("bad.csv");
    writeFileSync(file, `${a}\n${b},${c},ecdsa-sha2-nistp384 AAAAbroken\n`);
    expect(() => loadAllowlistCsv(file)).toThrow(InvalidKeyFileError);
    expect(() => loadAllowlistCsv(file)).toThrow(`${file} (row 2, column 3)`);
  });

  test("a non-EC key in the list is refused", () => {
    const ed = keys.sshKeygen("csv-ed25519", ["-t", "ed25519"]);
    const file = keys.path("ed.csv");
    writeFileSync(file, `${a},${csvElementOf(`${ed}.pub`)}\n`);
    expect(() => loadAllowlistCsv(file)).toThrow(/row 1, column 2.*elliptic-curve/);
  });

  test("an unterminated quote is an error", () => {
    const file = keys.path("quote.csv");
    writeFileSync(file, `"${a}\n`);
    expect(() => loadAllowlistCsv(file)).toThrow(/quoted field/);
  });

  test("a missing file is InvalidKeyFileError", () => {
    expect(() => loadAllowlistCsv(keys.path("missing.csv"))).toThrow(InvalidKeyFileError);
    expect(() => loadAllowlistCsv(keys.path("missing.csv"))).toThrow(/allowlist CSV .* does not exist/);
  });
});

test("PEM key objects from node:crypto are accepted as private keys", () => {
  const { privateKey } = generateEcKeyPair("P-521");
  const pem = privateKey.export({ type: "pkcs8", format: "pem" }) as string;
  const loaded = parseOpenSshPrivateKey(pem);
  expect(curveOf(loaded)).toBe("P-521");
  expect(publicPemOf(loaded)).toBe(publicPemOf(createPrivateKey(pem)));
});
