/**
 * SuperNode key handling on WebCrypto alone (`globalThis.crypto.subtle`), for runtimes without
 * node:crypto (a browser SuperNode). It reads and writes the same formats as keys.ts: OpenSSH
 * `ecdsa-sha2-nistpNNN` public-key lines and unencrypted `openssh-key-v1` private keys, and the
 * canonical PEM SPKI that the `public-key` header carries. Uint8Array only (no Buffer), no Node
 * import.
 */
import { InvalidKeyFileError } from "../core/errors";

export type WebEcCurve = "P-256" | "P-384" | "P-521";

interface WebCurveInfo {
  curve: WebEcCurve;
  sshCurve: string;
  sshType: string;
  /** DER of the curve OID (tag and length included). */
  oid: Uint8Array;
  fieldBytes: number;
}

const hex = (text: string): Uint8Array => Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));

const WEB_CURVES: readonly WebCurveInfo[] = [
  {
    curve: "P-256",
    sshCurve: "nistp256",
    sshType: "ecdsa-sha2-nistp256",
    oid: hex("06082a8648ce3d030107"),
    fieldBytes: 32,
  },
  { curve: "P-384", sshCurve: "nistp384", sshType: "ecdsa-sha2-nistp384", oid: hex("06052b81040022"), fieldBytes: 48 },
  { curve: "P-521", sshCurve: "nistp521", sshType: "ecdsa-sha2-nistp521", oid: hex("06052b81040023"), fieldBytes: 66 },
];

/** DER of the OID id-ecPublicKey (1.2.840.10045.2.1). */
const EC_PUBLIC_KEY_OID = hex("06072a8648ce3d0201");

/** Flower's default curve (and the one `ssh-keygen -t ecdsa -b 384` makes). */
const DEFAULT_WEB_CURVE: WebEcCurve = "P-384";

/** A SuperNode key pair as raw values: the private scalar and the uncompressed public point. */
export interface WebKeyPair {
  curve: WebEcCurve;
  /** Private scalar, big-endian, exactly the field size. */
  d: Uint8Array;
  /** Uncompressed SEC1 point (0x04 || x || y). */
  point: Uint8Array;
}

/** WebCrypto's types, named the same under Node's typings and the DOM's. */
type SubtleApi = (typeof globalThis.crypto)["subtle"];
export type WebCryptoKey = Awaited<ReturnType<SubtleApi["importKey"]>>;
interface EcJwk {
  kty: "EC";
  crv: WebEcCurve;
  x: string;
  y: string;
  d?: string;
  ext: boolean;
}

/** WebCrypto, or undefined (a browser offers it only to https:// pages and localhost). */
function webCrypto(): typeof globalThis.crypto | undefined {
  // Node 20 has globalThis.crypto (unflagged since Node 19); a plain-http page has none.
  // eslint-disable-next-line n/no-unsupported-features/node-builtins, @typescript-eslint/no-unnecessary-type-assertion
  return globalThis.crypto as typeof globalThis.crypto | undefined;
}

function subtle(): SubtleApi {
  const s = webCrypto()?.subtle;
  if (s === undefined) {
    throw new InvalidKeyFileError(
      "WebCrypto (crypto.subtle) is not available: a browser gives it only to https:// pages and localhost",
    );
  }
  return s;
}

function curveInfo(curve: WebEcCurve): WebCurveInfo {
  const info = WEB_CURVES.find((c) => c.curve === curve);
  if (info === undefined) throw new InvalidKeyFileError(`unsupported curve ${curve as string}`);
  return info;
}

// ---------------------------------------------------------------------------------------------
// Bytes and base64.

export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The bytes in an ArrayBuffer of their own, as WebCrypto's DOM typings want (copies). */
export function ownBuffer(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Standard base64 with padding. */
function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** Python's `urlsafe_b64encode`: URL-safe alphabet, `=` padding kept (what Flower sends). */
export function toBase64UrlPadded(bytes: Uint8Array): string {
  return toBase64(bytes).replace(/\+/g, "-").replace(/\//g, "_");
}

/** Strict base64 (either alphabet, padding optional); throws on anything else. */
export function fromBase64(text: string, what: string): Uint8Array {
  const standard = text.replace(/-/g, "+").replace(/_/g, "/");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(standard) || standard.replace(/=+$/, "").length % 4 === 1) {
    throw new Error(`${what} is not valid base64`);
  }
  const padded = standard.padEnd(Math.ceil(standard.length / 4) * 4, "=");
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

const latin1 = (bytes: Uint8Array): string => String.fromCharCode(...bytes);
const ascii = (text: string): Uint8Array => Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff);

// ---------------------------------------------------------------------------------------------
// DER and the SSH wire format.

function derLength(length: number): Uint8Array {
  if (length < 0x80) return Uint8Array.of(length);
  if (length < 0x100) return Uint8Array.of(0x81, length);
  return Uint8Array.of(0x82, length >> 8, length & 0xff);
}

function der(tag: number, ...parts: Uint8Array[]): Uint8Array {
  const body = concatBytes(...parts);
  return concatBytes(Uint8Array.of(tag), derLength(body.length), body);
}

class SshReader {
  private offset = 0;

  constructor(
    private readonly data: Uint8Array,
    private readonly what: string,
  ) {}

  get remaining(): number {
    return this.data.length - this.offset;
  }

  uint32(): number {
    if (this.remaining < 4) throw new Error(`${this.what} is truncated`);
    const value = new DataView(this.data.buffer, this.data.byteOffset + this.offset, 4).getUint32(0);
    this.offset += 4;
    return value;
  }

  bytes(): Uint8Array {
    const length = this.uint32();
    if (this.remaining < length) throw new Error(`${this.what} is truncated`);
    const value = this.data.subarray(this.offset, this.offset + length);
    this.offset += length;
    return value;
  }

  text(): string {
    return latin1(this.bytes());
  }

  rest(): Uint8Array {
    const value = this.data.subarray(this.offset);
    this.offset = this.data.length;
    return value;
  }
}

function sshString(bytes: Uint8Array): Uint8Array {
  const n = bytes.length;
  return concatBytes(Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff), bytes);
}

function checkPoint(curve: WebCurveInfo, point: Uint8Array): void {
  if (point[0] !== 0x04 || point.length !== 1 + 2 * curve.fieldBytes) {
    throw new Error(`the public point is not an uncompressed ${curve.sshCurve} point`);
  }
}

// ---------------------------------------------------------------------------------------------
// Public keys.

/** The canonical PEM SPKI (64-column base64, trailing newline), as keys.ts and Python write it. */
export function canonicalPemOfPoint(curve: WebEcCurve, point: Uint8Array): string {
  const info = curveInfo(curve);
  checkPoint(info, point);
  const spki = der(0x30, der(0x30, EC_PUBLIC_KEY_OID, info.oid), der(0x03, Uint8Array.of(0), point));
  const body = toBase64(spki).replace(/.{64}/g, "$&\n").replace(/\n$/, "");
  return `-----BEGIN PUBLIC KEY-----\n${body}\n-----END PUBLIC KEY-----\n`;
}

/** The curve and point of a PEM SPKI EC public key (uncompressed points only). */
export function pointOfPublicPem(pem: string): { curve: WebEcCurve; point: Uint8Array } {
  const begin = pem.indexOf("-----BEGIN PUBLIC KEY-----");
  const end = pem.indexOf("-----END PUBLIC KEY-----", begin);
  if (begin < 0 || end < 0) throw new Error("not a PEM public key");
  const spki = fromBase64(
    pem.slice(begin + "-----BEGIN PUBLIC KEY-----".length, end).replace(/\s+/g, ""),
    "the PEM body",
  );
  for (const info of WEB_CURVES) {
    const prefix = der(
      0x30,
      der(0x30, EC_PUBLIC_KEY_OID, info.oid),
      der(0x03, Uint8Array.of(0), new Uint8Array(1 + 2 * info.fieldBytes)),
    );
    const head = prefix.subarray(0, prefix.length - (1 + 2 * info.fieldBytes));
    if (spki.length === prefix.length && equalBytes(spki.subarray(0, head.length), head)) {
      const point = spki.subarray(head.length);
      checkPoint(info, point);
      return { curve: info.curve, point };
    }
  }
  throw new Error("not an uncompressed EC public key on P-256, P-384 or P-521");
}

function parsePublicBlob(
  blob: Uint8Array,
  expectedType: string | undefined,
): { curve: WebCurveInfo; point: Uint8Array } {
  const reader = new SshReader(blob, "the key blob");
  const type = reader.text();
  if (expectedType !== undefined && type !== expectedType)
    throw new Error(`the key blob is of type "${type}" but the line says "${expectedType}"`);
  const curve = WEB_CURVES.find((c) => c.sshType === type);
  if (curve === undefined)
    throw new Error(`key type "${type}" is not supported; use an ECDSA key (ssh-keygen -t ecdsa -b 384)`);
  if (reader.text() !== curve.sshCurve) throw new Error(`the key blob names another curve than ${type}`);
  const point = reader.bytes();
  if (reader.remaining !== 0) throw new Error("the key blob has trailing bytes");
  checkPoint(curve, point);
  return { curve, point: point.slice() };
}

/**
 * Parses an OpenSSH public-key line (`ecdsa-sha2-nistpNNN <base64>[ comment]`). Throws
 * InvalidKeyFileError saying what is wrong. The point is checked to be on the curve when it is
 * imported (see `checkWebKeyPair`).
 */
export function parseOpenSshPublicLine(line: string): { curve: WebEcCurve; point: Uint8Array } {
  const [type, body] = line.trim().split(/\s+/);
  try {
    if (!type || !body) throw new Error('expected a line "ecdsa-sha2-nistp384 AAAA..."');
    const { curve, point } = parsePublicBlob(fromBase64(body, "the key data"), type);
    return { curve: curve.curve, point };
  } catch (err) {
    throw new InvalidKeyFileError(`invalid OpenSSH public key: ${(err as Error).message}`, { cause: err });
  }
}

/** The OpenSSH public-key line of a point (what `keys/client_public_keys.csv` lists). */
export function openSshPublicLine(curve: WebEcCurve, point: Uint8Array, comment?: string): string {
  const info = curveInfo(curve);
  checkPoint(info, point);
  const blob = concatBytes(sshString(ascii(info.sshType)), sshString(ascii(info.sshCurve)), sshString(point));
  return `${info.sshType} ${toBase64(blob)}${comment ? ` ${comment}` : ""}`;
}

// ---------------------------------------------------------------------------------------------
// Private keys.

const OPENSSH_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----";
const OPENSSH_END = "-----END OPENSSH PRIVATE KEY-----";
const OPENSSH_MAGIC = ascii("openssh-key-v1\0");

function mpintToField(mpint: Uint8Array, size: number): Uint8Array {
  if (mpint.length > 0 && ((mpint.at(0) ?? 0) & 0x80) !== 0) throw new Error("the private scalar is negative");
  let start = 0;
  while (start < mpint.length && mpint[start] === 0) start++;
  const magnitude = mpint.subarray(start);
  if (magnitude.length === 0 || magnitude.length > size) throw new Error("the private scalar is out of range");
  return concatBytes(new Uint8Array(size - magnitude.length), magnitude);
}

/**
 * Parses an unencrypted OpenSSH private key (`ssh-keygen -t ecdsa -N ""`). Throws
 * InvalidKeyFileError for encrypted, non-EC or malformed keys. The stored public point is
 * checked against the scalar by `checkWebKeyPair`.
 */
export function parseOpenSshPrivateText(text: string): WebKeyPair {
  try {
    const begin = text.indexOf(OPENSSH_BEGIN);
    const end = text.indexOf(OPENSSH_END, begin);
    if (begin < 0 || end < 0)
      throw new Error(`expected "${OPENSSH_BEGIN}" … "${OPENSSH_END}" (an OpenSSH private key)`);
    const data = fromBase64(text.slice(begin + OPENSSH_BEGIN.length, end).replace(/\s+/g, ""), "the key body");
    if (!equalBytes(data.subarray(0, OPENSSH_MAGIC.length), OPENSSH_MAGIC))
      throw new Error("not an openssh-key-v1 key");
    const reader = new SshReader(data.subarray(OPENSSH_MAGIC.length), "the key");
    const cipher = reader.text();
    const kdf = reader.text();
    reader.bytes();
    if (cipher !== "none" || kdf !== "none") {
      throw new Error('the key is passphrase-protected; remove the passphrase with `ssh-keygen -p -N "" -f <file>`');
    }
    if (reader.uint32() !== 1) throw new Error("the file must hold exactly one key");
    const outer = parsePublicBlob(reader.bytes(), undefined);
    const section = new SshReader(reader.bytes(), "the private section");
    if (section.uint32() !== section.uint32()) throw new Error("the check integers differ (corrupt key)");
    const type = section.text();
    if (type !== outer.curve.sshType) throw new Error(`key type "${type}" is not supported or differs from the header`);
    if (section.text() !== outer.curve.sshCurve) throw new Error("the key names another curve than its type");
    const point = section.bytes();
    if (!equalBytes(point, outer.point))
      throw new Error("the public key in the header does not match the private section");
    const d = mpintToField(section.bytes(), outer.curve.fieldBytes);
    section.bytes(); // comment
    if (!section.rest().every((byte, i) => byte === i + 1)) throw new Error("the private section has invalid padding");
    return { curve: outer.curve.curve, d, point: outer.point };
  } catch (err) {
    throw new InvalidKeyFileError(`invalid OpenSSH private key: ${(err as Error).message}`, { cause: err });
  }
}

/** The unencrypted OpenSSH private-key text of a pair (what `ssh-keygen -N ""` writes). */
export function openSshPrivateText(pair: WebKeyPair, comment = ""): string {
  const info = curveInfo(pair.curve);
  const publicBlob = concatBytes(
    sshString(ascii(info.sshType)),
    sshString(ascii(info.sshCurve)),
    sshString(pair.point),
  );
  const mpint = ((pair.d.at(0) ?? 0) & 0x80) !== 0 ? concatBytes(Uint8Array.of(0), pair.d) : pair.d;
  const check = (webCrypto() ?? { getRandomValues: (a: Uint8Array) => a }).getRandomValues(new Uint8Array(4));
  let section = concatBytes(
    check,
    check,
    sshString(ascii(info.sshType)),
    sshString(ascii(info.sshCurve)),
    sshString(pair.point),
    sshString(mpint),
    sshString(ascii(comment)),
  );
  const pad = (8 - (section.length % 8)) % 8;
  section = concatBytes(
    section,
    Uint8Array.from({ length: pad }, (_, i) => i + 1),
  );
  const body = concatBytes(
    OPENSSH_MAGIC,
    sshString(ascii("none")),
    sshString(ascii("none")),
    sshString(new Uint8Array(0)),
    Uint8Array.of(0, 0, 0, 1),
    sshString(publicBlob),
    sshString(section),
  );
  return `${OPENSSH_BEGIN}\n${toBase64(body).replace(/.{70}/g, "$&\n").replace(/\n$/, "")}\n${OPENSSH_END}\n`;
}

// ---------------------------------------------------------------------------------------------
// WebCrypto keys.

const b64url = (bytes: Uint8Array): string =>
  toBase64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

function jwkOf(pair: { curve: WebEcCurve; point: Uint8Array; d?: Uint8Array }): EcJwk {
  const n = curveInfo(pair.curve).fieldBytes;
  const jwk: EcJwk = {
    kty: "EC",
    crv: pair.curve,
    x: b64url(pair.point.subarray(1, 1 + n)),
    y: b64url(pair.point.subarray(1 + n)),
    ext: true,
  };
  if (pair.d !== undefined) jwk.d = b64url(pair.d);
  return jwk;
}

/** The ECDH private key of a pair (not extractable). Throws InvalidKeyFileError if unusable. */
export async function importEcdhPrivateKey(pair: WebKeyPair): Promise<WebCryptoKey> {
  try {
    return await subtle().importKey(
      "jwk",
      { ...jwkOf(pair), ext: false },
      { name: "ECDH", namedCurve: pair.curve },
      false,
      ["deriveBits"],
    );
  } catch (err) {
    throw new InvalidKeyFileError(
      `the private key is not a valid ${pair.curve} key, or the public key does not belong to it: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** An ECDH public key from its point; rejects points that are not on the curve. */
export async function importEcdhPublicKey(curve: WebEcCurve, point: Uint8Array): Promise<WebCryptoKey> {
  return subtle().importKey("raw", ownBuffer(point), { name: "ECDH", namedCurve: curve }, true, []);
}

/**
 * Checks that `pair.point` is the public half of `pair.d`: an ephemeral key agrees the same
 * secret with both (WebCrypto has no "derive the public key" call).
 */
export async function checkWebKeyPair(pair: WebKeyPair): Promise<void> {
  const privateKey = await importEcdhPrivateKey(pair);
  let publicKey: WebCryptoKey;
  try {
    publicKey = await importEcdhPublicKey(pair.curve, pair.point);
  } catch (err) {
    throw new InvalidKeyFileError(`the public point is not on ${pair.curve}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const bits = curveInfo(pair.curve).fieldBytes * 8;
  const probe = await subtle().generateKey({ name: "ECDH", namedCurve: pair.curve }, false, ["deriveBits"]);
  const probePublic = new Uint8Array(await subtle().exportKey("raw", probe.publicKey));
  const a = new Uint8Array(
    await subtle().deriveBits(
      { name: "ECDH", public: await importEcdhPublicKey(pair.curve, probePublic) },
      privateKey,
      bits,
    ),
  );
  const b = new Uint8Array(await subtle().deriveBits({ name: "ECDH", public: publicKey }, probe.privateKey, bits));
  if (!equalBytes(a, b)) throw new InvalidKeyFileError("the public key does not belong to the private key");
}

/** A fresh key pair (P-384 by default), as raw values to store and export. */
export async function generateWebKeyPair(curve: WebEcCurve = DEFAULT_WEB_CURVE): Promise<WebKeyPair> {
  const pair = await subtle().generateKey({ name: "ECDH", namedCurve: curve }, true, ["deriveBits"]);
  const jwk = await subtle().exportKey("jwk", pair.privateKey);
  const n = curveInfo(curve).fieldBytes;
  const field = (v: string | undefined): Uint8Array => {
    const bytes = fromBase64(v ?? "", "a generated key");
    return concatBytes(new Uint8Array(n - bytes.length), bytes);
  };
  return { curve, d: field(jwk.d), point: concatBytes(Uint8Array.of(4), field(jwk.x), field(jwk.y)) };
}

/** SHA256 fingerprint as `ssh-keygen -l` prints it. */
export async function webSshFingerprint(curve: WebEcCurve, point: Uint8Array): Promise<string> {
  const info = curveInfo(curve);
  const blob = concatBytes(sshString(ascii(info.sshType)), sshString(ascii(info.sshCurve)), sshString(point));
  return "SHA256:" + toBase64(new Uint8Array(await subtle().digest("SHA-256", ownBuffer(blob)))).replace(/=+$/, "");
}

export { subtle as webSubtle };
