/**
 * The SuperNode side of node authentication (spec §4.6) on WebCrypto: the same protocol as
 * client-auth.ts (ECDH, HKDF-SHA256 with no salt and empty info, the HMAC key being the 44
 * ASCII bytes of base64url_padded(OKM), HMAC-SHA256 over the canonical encoding), for runtimes
 * without node:crypto. Its methods are async because WebCrypto is; RestFleetConnection awaits
 * them. test/auth/web-auth.test.ts runs the spec's vectors against it.
 */
import { PUBLIC_KEY_HEADER } from "../core/constants";
import { AuthenticationError, errorMessage } from "../core/errors";
import { type FleetRequestName, type MapOrder, canonicalEncodeChunks } from "../core/wire/canonical";
import {
  type WebCryptoKey,
  type WebEcCurve,
  type WebKeyPair,
  canonicalPemOfPoint,
  checkWebKeyPair,
  concatBytes,
  fromBase64,
  importEcdhPrivateKey,
  importEcdhPublicKey,
  ownBuffer,
  pointOfPublicPem,
  toBase64UrlPadded,
  webSubtle,
} from "./web-keys";

const FIELD_BITS: Record<WebEcCurve, number> = { "P-256": 256, "P-384": 384, "P-521": 528 };

/** ECDH shared secret Z (the x-coordinate, field-size bytes) with a peer's PEM public key. */
export async function webEcdhSharedSecret(
  privateKey: WebCryptoKey,
  curve: WebEcCurve,
  peerPublicPem: string,
): Promise<Uint8Array> {
  let peer: WebCryptoKey;
  let peerCurve: WebEcCurve;
  try {
    const parsed = pointOfPublicPem(peerPublicPem);
    peerCurve = parsed.curve;
    if (peerCurve !== curve)
      throw new Error(`the peer's key is on ${peerCurve} but this key is on ${curve}; both must use the same curve`);
    peer = await importEcdhPublicKey(peerCurve, parsed.point);
  } catch (err) {
    throw new AuthenticationError(`cannot agree on a shared key with the peer's public key: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  const bits = await webSubtle().deriveBits({ name: "ECDH", public: peer }, privateKey, FIELD_BITS[curve]);
  return new Uint8Array(bits);
}

/** HKDF-SHA256(Z), no salt, empty info, 32 bytes: Flower's key derivation. */
export async function webHkdfSha256(sharedSecret: Uint8Array): Promise<Uint8Array> {
  const ikm = await webSubtle().importKey("raw", ownBuffer(sharedSecret), "HKDF", false, ["deriveBits"]);
  const okm = await webSubtle().deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: new Uint8Array(0) },
    ikm,
    256,
  );
  return new Uint8Array(okm);
}

/** The HMAC key both sides use: the ASCII bytes of base64url_padded(HKDF-SHA256(Z)). */
export async function webDeriveHmacKey(
  privateKey: WebCryptoKey,
  curve: WebEcCurve,
  peerPublicPem: string,
): Promise<Uint8Array> {
  const okm = await webHkdfSha256(await webEcdhSharedSecret(privateKey, curve, peerPublicPem));
  return Uint8Array.from(toBase64UrlPadded(okm), (c) => c.charCodeAt(0));
}

/** HMAC-SHA256(key, payload), the 32-byte `auth-token` tag; chunks are MAC'd as one payload. */
export async function webAuthToken(
  hmacKey: Uint8Array | WebCryptoKey,
  payload: Uint8Array | readonly Uint8Array[],
): Promise<Uint8Array> {
  const key =
    hmacKey instanceof Uint8Array
      ? await webSubtle().importKey("raw", ownBuffer(hmacKey), { name: "HMAC", hash: "SHA-256" }, false, ["sign"])
      : hmacKey;
  const data = ownBuffer(payload instanceof Uint8Array ? payload : concatBytes(...payload));
  return new Uint8Array(await webSubtle().sign("HMAC", key, data));
}

/** What an HTTP transport needs to authenticate one request. */
export interface SignedRequest {
  bytes: Uint8Array;
  headers: Record<string, string>;
}

/** A SuperNode key pair and, after CreateNode, the HMAC key shared with the SuperLink. */
export class WebSuperNodeAuth {
  /** HMAC key (as a WebCryptoKey) once CreateNode delivered the SuperLink's public key. */
  private hmacKey: WebCryptoKey | undefined;
  private serverPem: string | undefined;

  private constructor(
    private readonly privateKey: WebCryptoKey,
    readonly curve: WebEcCurve,
    /** Canonical PEM of this node's public key. */
    readonly publicKeyPem: string,
    /** `public-key` header value: base64url (padded) of the canonical PEM. */
    readonly publicKeyHeader: string,
  ) {}

  /** Checks that the pair belongs together and imports it. Throws InvalidKeyFileError. */
  static async create(pair: WebKeyPair): Promise<WebSuperNodeAuth> {
    await checkWebKeyPair(pair);
    const pem = canonicalPemOfPoint(pair.curve, pair.point);
    const header = toBase64UrlPadded(Uint8Array.from(pem, (c) => c.charCodeAt(0)));
    return new WebSuperNodeAuth(await importEcdhPrivateKey(pair), pair.curve, pem, header);
  }

  get hasSharedKey(): boolean {
    return this.hmacKey !== undefined;
  }

  get serverPublicKeyPem(): string | undefined {
    return this.serverPem;
  }

  /**
   * The canonical bytes of a Fleet request and the headers that authenticate exactly those
   * bytes: `public-key` always, `auth-token` for every request but CreateNode.
   */
  async signedHeaders(requestName: FleetRequestName, request: object, order: MapOrder = "upb"): Promise<SignedRequest> {
    const encoded = canonicalEncodeChunks(requestName, request, order);
    const bytes = concatBytes(...encoded.chunks);
    const headers: Record<string, string> = { [PUBLIC_KEY_HEADER]: this.publicKeyHeader };
    if (requestName !== "CreateNodeRequest") {
      if (this.hmacKey === undefined) {
        throw new AuthenticationError(
          `Cannot authenticate ${requestName.replace(/Request$/, "")}: no key shared with the SuperLink yet (CreateNode must succeed first)`,
        );
      }
      headers["auth-token"] = toBase64UrlPadded(await webAuthToken(this.hmacKey, bytes));
    }
    return { bytes, headers };
  }

  /** Takes the SuperLink's `public-key` response header of CreateNode and derives the HMAC key. */
  async acceptServerPublicKeyHeader(text: string | undefined): Promise<void> {
    if (text === undefined || text.length === 0) {
      throw new AuthenticationError(
        "SuperLink did not send its public key; is authentication enabled on the SuperLink?",
      );
    }
    let pem: string;
    try {
      const bytes = fromBase64(text.trim(), "the SuperLink's public-key header");
      const parsed = pointOfPublicPem(String.fromCharCode(...bytes));
      pem = canonicalPemOfPoint(parsed.curve, parsed.point);
    } catch (err) {
      throw new AuthenticationError(`The SuperLink sent an invalid public key: ${errorMessage(err)}`, { cause: err });
    }
    const raw = await webDeriveHmacKey(this.privateKey, this.curve, pem);
    this.hmacKey = await webSubtle().importKey("raw", ownBuffer(raw), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
    ]);
    this.serverPem = pem;
  }

  /** Forgets the shared key; the next CreateNode derives it again. */
  reset(): void {
    this.hmacKey = undefined;
    this.serverPem = undefined;
  }
}
