/**
 * The cryptographic primitives of SuperNode authentication (docs/protocol.md, "Headers and MAC"), built on
 * node:crypto alone: ECDH on the NIST curves, HKDF-SHA256, HMAC-SHA256 and the base64 flavours
 * Python's `base64` module uses on the wire. Nothing here knows about gRPC or files.
 */
import { createHmac, createPublicKey, diffieHellman, hkdfSync, timingSafeEqual, type KeyObject } from "node:crypto";
import { AuthenticationError, MalformedMessageError, errorMessage } from "../core/errors";

/**
 * Python's `base64.urlsafe_b64encode`: the URL-safe alphabet (`-`, `_`) and, unlike Node's
 * `base64url`, the `=` padding kept. Flower sends and expects the padded form.
 */
export function base64UrlPadded(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    .toString("base64")
    .replace(/\+/g, "-")
    .replace(/\//g, "_");
}

const BASE64_VALUES: Int8Array = (() => {
  const table = new Int8Array(256).fill(-1);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (let i = 0; i < alphabet.length; i++) table[alphabet.charCodeAt(i)] = i;
  // urlsafe_b64decode first maps '-' -> '+' and '_' -> '/', so both alphabets decode.
  table["-".charCodeAt(0)] = 62;
  table["_".charCodeAt(0)] = 63;
  return table;
})();

/**
 * Decodes exactly as Python's `base64.urlsafe_b64decode` (CPython's non-strict
 * `binascii.a2b_base64`), so a header Python accepts is accepted here and vice versa:
 * both alphabets are accepted, characters outside the alphabet are skipped, decoding stops at
 * the padding that completes a quantum, and an incomplete final quantum throws
 * MalformedMessageError with Python's message ("Incorrect padding", or the "1 more than a
 * multiple of 4" message). Non-ASCII input throws too, as in Python.
 */
export function decodeBase64UrlLikePython(text: string | Uint8Array): Buffer {
  const input = typeof text === "string" ? Buffer.from(text, "latin1") : text;
  if (typeof text === "string" && /[^\x00-\x7f]/.test(text)) {
    throw new MalformedMessageError("string argument should contain only ASCII characters");
  }
  const out = Buffer.alloc(Math.floor((input.length * 3) / 4) + 3);
  let written = 0;
  let quadPos = 0;
  let leftChar = 0;
  let pads = 0;
  for (let i = 0; i < input.length; i++) {
    const ch = input[i] as number;
    if (ch === 0x3d /* '=' */) {
      // Only a '=' after at least two data characters counts towards the padding.
      if (quadPos >= 2) {
        pads += 1;
        if (quadPos + pads >= 4) return out.subarray(0, written);
      }
      continue;
    }
    const value = BASE64_VALUES[ch] as number;
    if (value < 0) continue;
    pads = 0;
    switch (quadPos) {
      case 0:
        quadPos = 1;
        leftChar = value;
        break;
      case 1:
        quadPos = 2;
        out[written++] = ((leftChar << 2) | (value >> 4)) & 0xff;
        leftChar = value & 0x0f;
        break;
      case 2:
        quadPos = 3;
        out[written++] = ((leftChar << 4) | (value >> 2)) & 0xff;
        leftChar = value & 0x03;
        break;
      default:
        quadPos = 0;
        out[written++] = ((leftChar << 6) | value) & 0xff;
        leftChar = 0;
    }
  }
  if (quadPos === 1) {
    const dataChars = Math.floor(written / 3) * 4 + 1;
    throw new MalformedMessageError(
      `Invalid base64-encoded string: number of data characters (${dataChars}) cannot be 1 more than a multiple of 4`,
    );
  }
  if (quadPos !== 0) throw new MalformedMessageError("Incorrect padding");
  return out.subarray(0, written);
}

/**
 * The raw ECDH shared secret Z (the x-coordinate, field-size bytes, big-endian). Throws
 * AuthenticationError when the two keys are on different curves or the peer key is unusable.
 */
export function ecdhSharedSecret(ownPrivateKey: KeyObject, peerPublicKey: KeyObject | string): Buffer {
  try {
    const publicKey = typeof peerPublicKey === "string" ? createPublicKey(peerPublicKey) : peerPublicKey;
    return diffieHellman({ privateKey: ownPrivateKey, publicKey });
  } catch (err) {
    throw new AuthenticationError(`cannot agree on a shared key with the peer's public key: ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

/** HKDF-SHA256 with no salt and empty info, 32 bytes: Flower's key derivation from Z. */
export function hkdfSha256(sharedSecret: Uint8Array): Buffer {
  return Buffer.from(hkdfSync("sha256", sharedSecret, Buffer.alloc(0), Buffer.alloc(0), 32));
}

/**
 * The HMAC key both sides use: the 44 ASCII bytes of base64url_padded(HKDF-SHA256(Z)), not the
 * 32 raw HKDF bytes (docs/protocol.md, "Headers and MAC"). Throws AuthenticationError if ECDH is impossible.
 */
export function deriveHmacKey(ownPrivateKey: KeyObject, peerPublicKey: KeyObject | string): Buffer {
  return Buffer.from(base64UrlPadded(hkdfSha256(ecdhSharedSecret(ownPrivateKey, peerPublicKey))), "ascii");
}

/**
 * HMAC-SHA256(hmacKey, payload): the 32-byte tag sent (base64url-padded) as `auth-token`.
 * A payload given as chunks is MAC'd as their concatenation, without joining them.
 */
export function computeAuthToken(hmacKey: Uint8Array, payload: Uint8Array | readonly Uint8Array[]): Buffer {
  const hmac = createHmac("sha256", hmacKey);
  if (payload instanceof Uint8Array) hmac.update(payload);
  else for (const chunk of payload) hmac.update(chunk);
  return hmac.digest();
}

/** Constant-time check of a received tag; a tag of the wrong length is simply false. */
export function verifyAuthToken(
  hmacKey: Uint8Array,
  payload: Uint8Array | readonly Uint8Array[],
  token: Uint8Array,
): boolean {
  const expected = computeAuthToken(hmacKey, payload);
  if (token.length !== expected.length) return false;
  return timingSafeEqual(expected, token);
}
