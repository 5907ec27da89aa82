/**
 * Fresh EC key pairs for tests, as KeyObjects of their own.
 *
 * The KeyObjects that Node 20's `generateKeyPairSync("ec")` returns share a lock with the job that
 * made them: exporting one (JWK or PEM) takes that lock, and if a garbage collection destroys the
 * job meanwhile, its destructor waits for the same lock and the process hangs for good (seen once,
 * a jest worker stuck in test/superlink/auth-precompute.integration.test.ts). Keys read back from
 * the PEM the job wrote share nothing with it.
 */
import { type KeyObject, createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";

export function generateEcKeyPair(namedCurve: string): { privateKey: KeyObject; publicKey: KeyObject } {
  const pems = generateKeyPairSync("ec", {
    namedCurve,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });
  return { privateKey: createPrivateKey(pems.privateKey), publicKey: createPublicKey(pems.publicKey) };
}
