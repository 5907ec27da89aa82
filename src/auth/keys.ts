/**
 * Key files of SuperNode authentication (docs/protocol.md, "Keys and files"): OpenSSH ECDSA public and private keys and
 * PEM keys (the allowlist CSV is read by allowlist-csv.ts). Every public key is reduced to its canonical
 * form, the PEM SubjectPublicKeyInfo text Python's `public_key_to_bytes` produces (named
 * curve, uncompressed point, 64-character lines): the allowlist, the node table and the
 * `public-key` headers all compare those exact bytes.
 *
 * Only node:crypto is used: it validates points (on the curve, not infinity) when it imports
 * them, and it derives the public point from a private scalar.
 */
import { ECDH, createHash, createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { InvalidKeyFileError, errorMessage } from "../core/errors";

/** The NIST curves OpenSSH and Flower support, by JOSE name. */
export type EcCurve = "P-256" | "P-384" | "P-521";

interface CurveInfo {
  curve: EcCurve;
  /** OpenSSH name inside the key blob, e.g. "nistp384". */
  sshCurve: string;
  /** OpenSSH key type, e.g. "ecdsa-sha2-nistp384". */
  sshType: string;
  /** OpenSSL name reported by KeyObject.asymmetricKeyDetails.namedCurve. */
  opensslName: string;
  /** DER encoding of the curve OID (tag and length included). */
  oidDer: Buffer;
  /** Field size in bytes: the length of d and of each coordinate. */
  fieldBytes: number;
  /** Group order n; a private scalar must satisfy 0 < d < n. */
  order: bigint;
}

const CURVES: readonly CurveInfo[] = [
  {
    curve: "P-256",
    sshCurve: "nistp256",
    sshType: "ecdsa-sha2-nistp256",
    opensslName: "prime256v1",
    oidDer: Buffer.from("06082a8648ce3d030107", "hex"),
    fieldBytes: 32,
    order: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  },
  {
    curve: "P-384",
    sshCurve: "nistp384",
    sshType: "ecdsa-sha2-nistp384",
    opensslName: "secp384r1",
    oidDer: Buffer.from("06052b81040022", "hex"),
    fieldBytes: 48,
    order: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
  },
  {
    curve: "P-521",
    sshCurve: "nistp521",
    sshType: "ecdsa-sha2-nistp521",
    opensslName: "secp521r1",
    oidDer: Buffer.from("06052b81040023", "hex"),
    fieldBytes: 66,
    order:
      0x01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409n,
  },
];

/** DER of the OID id-ecPublicKey (1.2.840.10045.2.1). */
const EC_PUBLIC_KEY_OID_DER = Buffer.from("06072a8648ce3d0201", "hex");

const EC_REQUIRED =
  "node authentication requires an elliptic-curve (ECDSA) key: ecdsa-sha2-nistp256, -nistp384 or " +
  '-nistp521 (create one with `ssh-keygen -t ecdsa -b 384 -N "" -f <file>`)';

/** Key types that are well-formed OpenSSH keys but not usable for Flower's ECDH. */
const NON_EC_SSH_TYPES =
  /^(ssh-ed25519|ssh-ed448|ssh-rsa|ssh-dss|rsa-sha2-256|rsa-sha2-512|sk-.*|.*-cert-v01@openssh\.com)$/;

function curveBySshType(type: string): CurveInfo | undefined {
  return CURVES.find((c) => c.sshType === type);
}

function curveOfKeyObject(key: KeyObject): CurveInfo | undefined {
  if (key.asymmetricKeyType !== "ec") return undefined;
  const name = key.asymmetricKeyDetails?.namedCurve;
  return CURVES.find((c) => c.opensslName === name);
}

function label(source: string | undefined): string {
  return source ? ` in ${source}` : "";
}

// ---------------------------------------------------------------------------------------------
// Minimal DER and SSH wire-format helpers.

function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  if (length < 0x100) return Buffer.from([0x81, length]);
  return Buffer.from([0x82, length >> 8, length & 0xff]);
}

function der(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

/** Reads the `uint32` and `string` fields of the SSH wire format, with bounds checks. */
class SshReader {
  private offset = 0;

  constructor(
    private readonly data: Buffer,
    private readonly what: string,
  ) {}

  get remaining(): number {
    return this.data.length - this.offset;
  }

  uint32(): number {
    if (this.remaining < 4) throw new Error(`${this.what} is truncated`);
    const value = this.data.readUInt32BE(this.offset);
    this.offset += 4;
    return value;
  }

  bytes(): Buffer {
    const length = this.uint32();
    if (this.remaining < length) throw new Error(`${this.what} is truncated`);
    const value = this.data.subarray(this.offset, this.offset + length);
    this.offset += length;
    return value;
  }

  text(): string {
    return this.bytes().toString("latin1");
  }

  rest(): Buffer {
    const value = this.data.subarray(this.offset);
    this.offset = this.data.length;
    return value;
  }
}

/** Strict standard base64 (what OpenSSH writes); Buffer.from would silently skip garbage. */
function decodeStrictBase64(text: string, what: string): Buffer {
  if (text.length === 0 || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
    throw new Error(`${what} is not valid base64`);
  }
  return Buffer.from(text, "base64");
}

// ---------------------------------------------------------------------------------------------
// Public keys.

/**
 * Validates a raw SEC1 point on `curve` and returns the canonical PEM. OpenSSL rejects points
 * that are not on the curve (or have a coordinate >= p); the point at infinity is rejected here.
 * `ECDH.convertKey` runs the same OpenSSL point decoding as importing the SPKI into a KeyObject
 * (same points accepted, same uncompressed form) without creating one: a KeyObject's native key
 * lives until a GC, so 10,000 allowlisted keys left ~100 MB to the allocator, and took 20x the CPU.
 */
function canonicalPemFromPoint(curve: CurveInfo, point: Buffer): string {
  const first = point[0];
  const uncompressed = first === 0x04 && point.length === 1 + 2 * curve.fieldBytes;
  const compressed = (first === 0x02 || first === 0x03) && point.length === 1 + curve.fieldBytes;
  if (!uncompressed && !compressed) {
    throw new Error(`the public point has the wrong length or encoding for ${curve.sshCurve}`);
  }
  let decoded: Buffer;
  try {
    decoded = ECDH.convertKey(point, curve.opensslName, undefined, undefined, "uncompressed") as Buffer;
  } catch (err) {
    throw new Error(`the public point is not on curve ${curve.sshCurve} (${errorMessage(err)})`, { cause: err });
  }
  if (decoded.length !== 1 + 2 * curve.fieldBytes) {
    throw new Error(`the public point is not on curve ${curve.sshCurve}`);
  }
  return pemOfPoint(curve, decoded);
}

/**
 * PEM SPKI of a public (or private) EC key, byte-identical to Python's public_key_to_bytes.
 * Written from the key's (x, y) rather than re-imported through JWK: OpenSSL keeps a compressed
 * point compressed on export, and a JWK import runs a full key check (a scalar multiplication,
 * ~0.6 ms on P-384) that a key already held by a KeyObject has passed on its way in.
 */
function canonicalPublicPem(key: KeyObject): string {
  const info = curveOfKeyObject(key);
  const { x, y } = key.export({ format: "jwk" });
  if (info === undefined || x === undefined || y === undefined) {
    throw new Error("the public key is not an EC key with an (x, y) point on P-256, P-384 or P-521");
  }
  const xBytes = Buffer.from(x, "base64url");
  const yBytes = Buffer.from(y, "base64url");
  if (xBytes.length !== info.fieldBytes || yBytes.length !== info.fieldBytes) {
    throw new Error(`the public point's coordinates are not ${info.fieldBytes} bytes long`);
  }
  return pemOfPoint(info, Buffer.concat([Buffer.from([0x04]), xBytes, yBytes]));
}

/** The canonical PEM text of an uncompressed point (64-column base64, trailing newline), as OpenSSL writes it. */
function pemOfPoint(curve: CurveInfo, point: Buffer): string {
  const spki = der(0x30, der(0x30, EC_PUBLIC_KEY_OID_DER, curve.oidDer), der(0x03, Buffer.from([0x00]), point));
  const body = spki.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n$/, "");
  return `-----BEGIN PUBLIC KEY-----\n${body}\n-----END PUBLIC KEY-----\n`;
}

/** Parses an OpenSSH public key blob (`string type, string curve, string Q`). */
function parsePublicBlob(blob: Buffer, expectedType: string | undefined): { curve: CurveInfo; point: Buffer } {
  const reader = new SshReader(blob, "the key blob");
  const type = reader.text();
  if (expectedType !== undefined && type !== expectedType) {
    throw new Error(`the key blob is of type "${type}" but the line says "${expectedType}"`);
  }
  const curve = curveBySshType(type);
  if (!curve)
    throw new Error(
      NON_EC_SSH_TYPES.test(type) ? `"${type}" is not supported; ${EC_REQUIRED}` : `unknown key type "${type}"`,
    );
  const curveName = reader.text();
  if (curveName !== curve.sshCurve) {
    throw new Error(`the key blob names curve "${curveName}" but its type is ${type}`);
  }
  const point = reader.bytes();
  if (reader.remaining !== 0) throw new Error("the key blob has trailing bytes");
  return { curve, point };
}

/**
 * Parses one OpenSSH public-key line (`ecdsa-sha2-nistpNNN <base64>[ comment]`, as in a `.pub`
 * file or an allowlist element) and returns its canonical PEM SPKI text. Surrounding whitespace
 * and the comment are ignored. Throws InvalidKeyFileError for non-EC keys (ed25519, RSA, ...),
 * a blob whose type or curve disagrees with the line, trailing bytes, or a point not on the
 * curve. `source` names the file (and position) in messages.
 */
export function parseOpenSshPublicKey(line: string, source?: string): string {
  const tokens = line.trim().split(/\s+/);
  const [type, body] = tokens;
  if (!type)
    throw new InvalidKeyFileError(
      `empty public key${label(source)}; expected an OpenSSH line "ecdsa-sha2-nistp384 AAAA..."`,
    );
  if (!curveBySshType(type)) {
    if (NON_EC_SSH_TYPES.test(type)) {
      throw new InvalidKeyFileError(`the public key${label(source)} is of type "${type}"; ${EC_REQUIRED}`);
    }
    throw new InvalidKeyFileError(
      `not an OpenSSH public key${label(source)}: expected "ecdsa-sha2-nistpNNN <base64>", got "${type.slice(0, 40)}..."`,
    );
  }
  if (!body) throw new InvalidKeyFileError(`the public key${label(source)} has no base64 key data after "${type}"`);
  try {
    const { curve, point } = parsePublicBlob(decodeStrictBase64(body, "the key data"), type);
    return canonicalPemFromPoint(curve, point);
  } catch (err) {
    if (err instanceof InvalidKeyFileError) throw err;
    throw new InvalidKeyFileError(`invalid OpenSSH public key${label(source)}: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * Canonicalizes a PEM public key (`BEGIN PUBLIC KEY`, any EC encoding) to the canonical PEM.
 * Throws InvalidKeyFileError for non-EC or unsupported curves.
 */
export function canonicalizePublicPem(pem: string, source?: string): string {
  return importPublicPem(pem, source).pem;
}

/** A parsed EC public key: the KeyObject (for ECDH), its canonical PEM and its curve. */
export interface ImportedPublicKey {
  key: KeyObject;
  pem: string;
  curve: EcCurve;
}

/**
 * `canonicalizePublicPem` that also returns the parsed key and its curve, so a caller that goes
 * on to ECDH parses the PEM once. Throws InvalidKeyFileError for non-EC or unsupported curves.
 */
export function importPublicPem(pem: string, source?: string): ImportedPublicKey {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: "pem" });
  } catch (err) {
    throw new InvalidKeyFileError(`invalid PEM public key${label(source)}: ${errorMessage(err)}`, { cause: err });
  }
  const info = curveOfKeyObject(key);
  if (!info) {
    throw new InvalidKeyFileError(`the public key${label(source)} is ${describeKey(key)}; ${EC_REQUIRED}`);
  }
  return { key, pem: canonicalPublicPem(key), curve: info.curve };
}

function describeKey(key: KeyObject): string {
  if (key.asymmetricKeyType === "ec")
    return `an EC key on unsupported curve ${key.asymmetricKeyDetails?.namedCurve ?? "?"}`;
  return `a ${key.asymmetricKeyType ?? "non-EC"} key`;
}

// ---------------------------------------------------------------------------------------------
// Private keys.

const OPENSSH_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----";
const OPENSSH_END = "-----END OPENSSH PRIVATE KEY-----";
const OPENSSH_MAGIC = Buffer.from("openssh-key-v1\0", "latin1");
const PASSPHRASE_UNSUPPORTED =
  'passphrase-protected keys are not supported; remove the passphrase with `ssh-keygen -p -N "" -f <file>`';

/** Builds a private KeyObject from the scalar alone; OpenSSL derives the public point. */
function privateKeyFromScalar(curve: CurveInfo, d: Buffer): KeyObject {
  const scalar = BigInt("0x" + (d.length ? d.toString("hex") : "0"));
  if (scalar <= 0n || scalar >= curve.order)
    throw new Error(`the private scalar is out of range for ${curve.sshCurve}`);
  const sec1 = der(0x30, der(0x02, Buffer.from([0x01])), der(0x04, d), der(0xa0, curve.oidDer));
  return createPrivateKey({ key: sec1, format: "der", type: "sec1" });
}

/** An SSH `mpint` as an unsigned big-endian field element of exactly `size` bytes. */
function mpintToFieldBytes(mpint: Buffer, size: number): Buffer {
  if (mpint.length > 0 && ((mpint[0] as number) & 0x80) !== 0) throw new Error("the private scalar is negative");
  let start = 0;
  while (start < mpint.length && mpint[start] === 0) start++;
  const magnitude = mpint.subarray(start);
  if (magnitude.length > size) throw new Error(`the private scalar is longer than ${size} bytes`);
  return Buffer.concat([Buffer.alloc(size - magnitude.length), magnitude]);
}

function parseOpenSshKeyV1(text: string): KeyObject {
  const begin = text.indexOf(OPENSSH_BEGIN);
  const end = text.indexOf(OPENSSH_END, begin);
  if (begin < 0 || end < 0) throw new Error(`missing "${OPENSSH_END}"`);
  const body = text.slice(begin + OPENSSH_BEGIN.length, end).replace(/\s+/g, "");
  const data = decodeStrictBase64(body, "the key body");
  if (!data.subarray(0, OPENSSH_MAGIC.length).equals(OPENSSH_MAGIC)) throw new Error("not an openssh-key-v1 key");
  const reader = new SshReader(data.subarray(OPENSSH_MAGIC.length), "the key");
  const cipher = reader.text();
  const kdf = reader.text();
  reader.bytes(); // kdf options
  if (cipher !== "none" || kdf !== "none") throw new PassphraseError();
  const count = reader.uint32();
  if (count !== 1) throw new Error(`the file holds ${count} keys; exactly one is supported`);
  const outerPublic = reader.bytes();
  const section = new SshReader(reader.bytes(), "the private section");
  if (section.uint32() !== section.uint32()) throw new Error("the check integers differ (corrupt key)");
  const type = section.text();
  const curve = curveBySshType(type);
  if (!curve) throw new NotEcError(type);
  const curveName = section.text();
  if (curveName !== curve.sshCurve) throw new Error(`the key names curve "${curveName}" but its type is ${type}`);
  const point = section.bytes();
  const d = mpintToFieldBytes(section.bytes(), curve.fieldBytes);
  section.bytes(); // comment
  const padding = section.rest();
  if (!padding.every((byte, i) => byte === i + 1)) throw new Error("the private section has invalid padding");

  const privateKey = privateKeyFromScalar(curve, d);
  const derived = canonicalPublicPem(privateKey);
  if (canonicalPemFromPoint(curve, point) !== derived) {
    throw new Error("the stored public point does not match the private scalar (corrupt key)");
  }
  const outer = parsePublicBlob(outerPublic, type);
  if (canonicalPemFromPoint(outer.curve, outer.point) !== derived) {
    throw new Error("the public key in the header does not match the private key (corrupt key)");
  }
  return privateKey;
}

class PassphraseError extends Error {}
class NotEcError extends Error {
  constructor(readonly keyType: string) {
    super(keyType);
  }
}

/**
 * Parses a private key: an unencrypted OpenSSH key (`BEGIN OPENSSH PRIVATE KEY`, what
 * `ssh-keygen -N ""` writes) or a PEM key (`BEGIN PRIVATE KEY` PKCS#8 / `BEGIN EC PRIVATE KEY`
 * SEC1). The key must be EC on P-256, P-384 or P-521. The public point is always derived from
 * the private scalar and checked against the one stored in the file. Throws
 * InvalidKeyFileError: passphrase-protected keys are refused with a hint on removing the
 * passphrase, non-EC keys with a hint on creating an ECDSA key.
 */
export function parseOpenSshPrivateKey(text: string, source?: string): KeyObject {
  if (text.includes(OPENSSH_BEGIN)) {
    try {
      return parseOpenSshKeyV1(text);
    } catch (err) {
      if (err instanceof PassphraseError)
        throw new InvalidKeyFileError(`the private key${label(source)} is encrypted: ${PASSPHRASE_UNSUPPORTED}`);
      if (err instanceof NotEcError)
        throw new InvalidKeyFileError(`the private key${label(source)} is of type "${err.keyType}"; ${EC_REQUIRED}`);
      throw new InvalidKeyFileError(`invalid OpenSSH private key${label(source)}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,ENCRYPTED/.test(text)) {
    throw new InvalidKeyFileError(`the private key${label(source)} is encrypted: ${PASSPHRASE_UNSUPPORTED}`);
  }
  if (!/-----BEGIN (EC )?PRIVATE KEY-----/.test(text)) {
    if (/-----BEGIN (RSA|DSA) PRIVATE KEY-----/.test(text)) {
      throw new InvalidKeyFileError(`the private key${label(source)} is not an EC key; ${EC_REQUIRED}`);
    }
    throw new InvalidKeyFileError(
      `not a private key${label(source)}: expected "${OPENSSH_BEGIN}", "-----BEGIN PRIVATE KEY-----" or "-----BEGIN EC PRIVATE KEY-----"`,
    );
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: text, format: "pem" });
  } catch (err) {
    throw new InvalidKeyFileError(`invalid PEM private key${label(source)}: ${errorMessage(err)}`, { cause: err });
  }
  if (!curveOfKeyObject(key))
    throw new InvalidKeyFileError(`the private key${label(source)} is ${describeKey(key)}; ${EC_REQUIRED}`);
  return key;
}

// ---------------------------------------------------------------------------------------------
// Files.

/** Reads a key-related text file; InvalidKeyFileError naming the file if it cannot be read. */
export function readKeyTextFile(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === "ENOENT" ? "the file does not exist" : errorMessage(err);
    throw new InvalidKeyFileError(`cannot read ${what} ${path}: ${reason}`, { cause: err });
  }
}

/**
 * Parses a public key's text, either an OpenSSH `.pub` line or a PEM `BEGIN PUBLIC KEY`, and
 * returns its canonical PEM. Throws InvalidKeyFileError naming `source` (a file, or what the
 * text is) in messages.
 */
export function parsePublicKey(text: string, source: string): string {
  if (text.includes("-----BEGIN")) {
    if (!text.includes("-----BEGIN PUBLIC KEY-----")) {
      throw new InvalidKeyFileError(
        `${source} is not a public key file (expected an OpenSSH .pub line or "-----BEGIN PUBLIC KEY-----")`,
      );
    }
    return canonicalizePublicPem(text, source);
  }
  const line = text.split(/\r?\n/).find((l) => l.trim() !== "");
  if (line === undefined) throw new InvalidKeyFileError(`the public key ${source} is empty`);
  return parseOpenSshPublicKey(line, source);
}

/** Loads a public key file (see parsePublicKey). Throws InvalidKeyFileError naming the file. */
export function loadPublicKeyFile(path: string): string {
  return parsePublicKey(readKeyTextFile(path, "public key file"), path);
}

/** Loads a private key file (see parseOpenSshPrivateKey). Throws InvalidKeyFileError naming the file. */
export function loadPrivateKeyFile(path: string): KeyObject {
  return parseOpenSshPrivateKey(readKeyTextFile(path, "private key file"), path);
}

/** The canonical PEM of the public half of a private (or public) EC key. */
export function publicPemOf(key: KeyObject): string {
  return canonicalPublicPem(key);
}

/**
 * The curve of an EC key (KeyObject or PEM text). Throws InvalidKeyFileError for non-EC keys or
 * curves other than P-256/384/521.
 */
export function curveOf(key: KeyObject | string): EcCurve {
  let object: KeyObject;
  try {
    object = typeof key === "string" ? createPublicKey(key) : key;
  } catch (err) {
    throw new InvalidKeyFileError(`invalid key: ${errorMessage(err)}`, { cause: err });
  }
  const info = curveOfKeyObject(object);
  if (!info) throw new InvalidKeyFileError(`the key is ${describeKey(object)}; ${EC_REQUIRED}`);
  return info.curve;
}

/**
 * The OpenSSH SHA256 fingerprint of an EC public key (PEM text or KeyObject), as
 * `ssh-keygen -lf key.pub` prints it (`SHA256:...`). Safe to log: it identifies a key in
 * messages without printing the key.
 */
export function sshFingerprint(key: KeyObject | string): string {
  const object = typeof key === "string" || key.type === "private" ? createPublicKey(key) : key;
  const info = curveOfKeyObject(object);
  if (!info) throw new InvalidKeyFileError(`the key is ${describeKey(object)}; ${EC_REQUIRED}`);
  const jwk = object.export({ format: "jwk" });
  const point = Buffer.concat([
    Buffer.from([0x04]),
    Buffer.from(jwk.x ?? "", "base64url"),
    Buffer.from(jwk.y ?? "", "base64url"),
  ]);
  const sshString = (b: Buffer): Buffer => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(b.length);
    return Buffer.concat([length, b]);
  };
  const blob = Buffer.concat([
    sshString(Buffer.from(info.sshType)),
    sshString(Buffer.from(info.sshCurve)),
    sshString(point),
  ]);
  return "SHA256:" + createHash("sha256").update(blob).digest("base64").replace(/=+$/, "");
}

/** A private key and the canonical PEM of the matching public key. */
export interface KeyPair {
  privateKey: KeyObject;
  publicKeyPem: string;
}

/**
 * Throws InvalidKeyFileError unless `publicKeyPem` is the public half of `privateKey`. A
 * mismatched pair would make every MAC fail with nothing but "Access denied" to show for it.
 */
export function assertKeyPair(
  privateKey: KeyObject,
  publicKeyPem: string,
  names?: { privatePath?: string; publicPath?: string },
): void {
  if (publicPemOf(privateKey) !== canonicalizePublicPem(publicKeyPem)) {
    const priv = names?.privatePath ?? "the private key";
    const pub = names?.publicPath ?? "the public key";
    throw new InvalidKeyFileError(`${pub} is not the public key of ${priv}; the two files must be one key pair`);
  }
}

/**
 * Loads a private/public key file pair (e.g. `server_credentials` and `server_credentials.pub`)
 * and checks that they belong together. Throws InvalidKeyFileError.
 */
export function loadKeyPairFiles(privateKeyPath: string, publicKeyPath: string): KeyPair {
  const privateKey = loadPrivateKeyFile(privateKeyPath);
  const publicKeyPem = loadPublicKeyFile(publicKeyPath);
  assertKeyPair(privateKey, publicKeyPem, { privatePath: privateKeyPath, publicPath: publicKeyPath });
  return { privateKey, publicKeyPem };
}
