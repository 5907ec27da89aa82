/**
 * SuperNode side of SuperNode authentication (docs/protocol.md, "SuperNode side"): every Fleet request carries the
 * node's `public-key`; CreateNode's response headers deliver the SuperLink's public key, from
 * which the shared HMAC key is derived (ECDH + HKDF); every later request carries an
 * `auth-token`, the HMAC of the request's canonical encoding. The caller must send exactly the
 * bytes that were MAC'd (see `signedRequest`), since a Python SuperLink re-encodes the request
 * and compares.
 */
import * as grpc from "@grpc/grpc-js";
import type { KeyObject } from "node:crypto";
import { AUTH_TOKEN_HEADER, PUBLIC_KEY_HEADER } from "../core/constants";
import { AuthenticationError, errorMessage } from "../core/errors";
import { type FleetRequestName, type MapOrder, canonicalEncodeChunks } from "../core/wire/canonical";
import { type EncodedChunks, joinChunks } from "../core/wire/chunked-writer";
import { base64UrlPadded, computeAuthToken, decodeBase64UrlLikePython, deriveHmacKey } from "./crypto";
import {
  type EcCurve,
  type ImportedPublicKey,
  assertKeyPair,
  curveOf,
  importPublicPem,
  loadKeyPairFiles,
  publicPemOf,
} from "./keys";

const NO_SERVER_KEY = "SuperLink did not send its public key; is authentication enabled on the SuperLink?";

/**
 * The SuperLink key parsed last, by its header value: the SuperNodes of one process (and a node
 * registering again) get the same key, parsed once (a P-384 PEM import is ~0.15-0.3 ms). A
 * KeyObject is immutable, so sharing it is safe; each node's ECDH stays its own.
 */
let lastServerKey: { header: string; key: ImportedPublicKey } | undefined;

function importServerKeyHeader(text: string): ImportedPublicKey {
  if (lastServerKey?.header === text) return lastServerKey.key;
  const key = importPublicPem(decodeBase64UrlLikePython(text).toString("latin1"));
  lastServerKey = { header: text, key };
  return key;
}

/**
 * A SuperNode's key pair and, after CreateNode, the HMAC key shared with the SuperLink.
 * One instance per connection; a new CreateNode replaces the shared key.
 */
export class SuperNodeAuth {
  /** Canonical PEM of this node's public key. */
  readonly publicKeyPem: string;
  /** `public-key` header value: base64url (padded) of the canonical PEM. */
  readonly publicKeyHeader: string;
  private readonly privateKey: KeyObject;
  private readonly curve: EcCurve;
  private hmacKey: Buffer | undefined;
  private serverPem: string | undefined;

  /** Throws InvalidKeyFileError if publicKeyPem is not the public half of privateKey. */
  constructor(privateKey: KeyObject, publicKeyPem?: string) {
    this.curve = curveOf(privateKey);
    const derived = publicPemOf(privateKey);
    // A canonical PEM equal to the derived one needs no further check (loadKeyPairFiles made it so).
    if (publicKeyPem !== undefined && publicKeyPem !== derived) assertKeyPair(privateKey, publicKeyPem);
    this.privateKey = privateKey;
    this.publicKeyPem = derived;
    this.publicKeyHeader = base64UrlPadded(Buffer.from(derived, "latin1"));
  }

  /**
   * Loads the node's private key (OpenSSH or PEM) and public key (`.pub` or PEM) files and
   * checks that they are one pair. Throws InvalidKeyFileError naming the file at fault.
   */
  static fromFiles(privateKeyPath: string, publicKeyPath: string): SuperNodeAuth {
    const { privateKey, publicKeyPem } = loadKeyPairFiles(privateKeyPath, publicKeyPath);
    return new SuperNodeAuth(privateKey, publicKeyPem);
  }

  /** Whether CreateNode has delivered the SuperLink's key (auth tokens can be made). */
  get hasSharedKey(): boolean {
    return this.hmacKey !== undefined;
  }

  /** Canonical PEM of the SuperLink's public key, once received. */
  get serverPublicKeyPem(): string | undefined {
    return this.serverPem;
  }

  /**
   * Metadata for one Fleet call: `public-key` always, plus `auth-token` over
   * `canonicalEncode(requestName, request, order)` for every request but CreateNode. Throws
   * AuthenticationError if an auth token is needed before CreateNode delivered the SuperLink's
   * key, MalformedMessageError if the request cannot be encoded.
   */
  metadataFor(requestName: FleetRequestName, request: object, order: MapOrder = "upb"): grpc.Metadata {
    return this.signedRequest(requestName, request, order).metadata;
  }

  /**
   * The canonical bytes of the request and the metadata that authenticates exactly those
   * bytes: send `bytes` as the request body (e.g. with an identity serializer).
   */
  signedRequest(
    requestName: FleetRequestName,
    request: object,
    order: MapOrder = "upb",
  ): { bytes: Uint8Array; metadata: grpc.Metadata } {
    const { encoded, metadata } = this.signedRequestChunks(requestName, request, order);
    return { bytes: joinChunks(encoded), metadata };
  }

  /**
   * `signedRequest` with the canonical bytes as chunks that reference the request's large
   * `bytes` values (MAC'd and sent without copying them; they must not change until sent).
   */
  signedRequestChunks(
    requestName: FleetRequestName,
    request: object,
    order: MapOrder = "upb",
  ): { encoded: EncodedChunks; metadata: grpc.Metadata } {
    const encoded = canonicalEncodeChunks(requestName, request, order);
    const metadata = new grpc.Metadata();
    metadata.set(PUBLIC_KEY_HEADER, this.publicKeyHeader);
    if (requestName !== "CreateNodeRequest") {
      if (this.hmacKey === undefined) {
        throw new AuthenticationError(
          `Cannot authenticate ${requestName.replace(/Request$/, "")}: no key shared with the SuperLink yet (CreateNode must succeed first)`,
        );
      }
      metadata.set(AUTH_TOKEN_HEADER, base64UrlPadded(computeAuthToken(this.hmacKey, encoded.chunks)));
    }
    return { encoded, metadata };
  }

  /**
   * Takes the SuperLink's `public-key` from a CreateNode response's initial metadata and derives
   * the shared HMAC key (replacing any earlier one). Throws AuthenticationError if the header
   * is missing (authentication off on the SuperLink), is not a valid EC public key, or is on a
   * different curve than this node's key.
   */
  acceptCreateNodeMetadata(metadata: grpc.Metadata): void {
    const value = metadata.get(PUBLIC_KEY_HEADER)[0];
    this.acceptServerPublicKeyHeader(
      value === undefined ? undefined : typeof value === "string" ? value : value.toString("latin1"),
    );
  }

  /**
   * `signedRequest` with plain header values instead of gRPC metadata (for HTTP transports):
   * `public-key` always, `auth-token` for every request but CreateNode.
   */
  signedHeaders(
    requestName: FleetRequestName,
    request: object,
    order: MapOrder = "upb",
  ): { bytes: Uint8Array; headers: Record<string, string> } {
    const { bytes, metadata } = this.signedRequest(requestName, request, order);
    const headers: Record<string, string> = {};
    for (const key of [PUBLIC_KEY_HEADER, AUTH_TOKEN_HEADER]) {
      const value = metadata.get(key)[0];
      if (value !== undefined) headers[key] = value.toString();
    }
    return { bytes, headers };
  }

  /** `acceptCreateNodeMetadata` for the `public-key` value of an HTTP response header. */
  acceptServerPublicKeyHeader(text: string | undefined): void {
    if (text === undefined || text.length === 0) throw new AuthenticationError(NO_SERVER_KEY);
    let server: ImportedPublicKey;
    try {
      server = importServerKeyHeader(text);
    } catch (err) {
      throw new AuthenticationError(`The SuperLink sent an invalid public key: ${errorMessage(err)}`, { cause: err });
    }
    if (this.curve !== server.curve) {
      throw new AuthenticationError(
        `The SuperLink's key is on ${server.curve} but this SuperNode's key is on ${this.curve}; both must use the same curve`,
      );
    }
    // The parsed key goes to ECDH as it is: the PEM is parsed once.
    this.hmacKey = deriveHmacKey(this.privateKey, server.key);
    this.serverPem = server.pem;
  }

  /** Forgets the shared key (e.g. before reconnecting); the next CreateNode derives it again. */
  reset(): void {
    this.hmacKey = undefined;
    this.serverPem = undefined;
  }
}
