/**
 * TLS material -> grpc-js credentials. The Fleet API serves TLS without requesting client
 * certificates (as Flower does); the Driver API can require one signed by a given CA (mutual
 * TLS, flwr-ts only). Clients verify the server against a given CA bundle and, towards such a
 * Driver API, present a client certificate.
 */
import { readFileSync } from "node:fs";
import { X509Certificate, createPrivateKey } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { InvalidConfigError, InvalidKeyFileError, errorMessage } from "../core/errors";

/** PEM contents of the SuperLink's TLS files. */
export interface ServerTlsMaterial {
  caCert: Buffer;
  cert: Buffer;
  key: Buffer;
}

export interface ServerTlsFiles {
  caCertFile: string;
  certFile: string;
  keyFile: string;
}

function readPemFile(path: string, what: string): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    throw new InvalidKeyFileError(`Cannot read ${what} "${path}": ${errorMessage(err)}`, { cause: err });
  }
  if (!data.includes("-----BEGIN ")) {
    throw new InvalidKeyFileError(`${what} "${path}" is not a PEM file`);
  }
  return data;
}

/** Reads and checks the three PEM files; errors name the file and what is wrong with it. */
export function readServerTlsFiles(files: ServerTlsFiles): ServerTlsMaterial {
  const material = {
    caCert: readPemFile(files.caCertFile, "CA certificate"),
    cert: readPemFile(files.certFile, "server certificate"),
    key: readPemFile(files.keyFile, "server private key"),
  };
  checkServerTlsMaterial(material, files);
  return material;
}

/** Fails early, with a readable message, on material grpc-js would reject with a cryptic one. */
export function checkServerTlsMaterial(material: ServerTlsMaterial, names?: Partial<ServerTlsFiles>): void {
  const label = (n: string | undefined, fallback: string): string => (n ? `"${n}"` : fallback);
  let cert: X509Certificate;
  try {
    new X509Certificate(material.caCert);
  } catch (err) {
    throw new InvalidKeyFileError(`CA certificate ${label(names?.caCertFile, "")} is not a valid X.509 certificate`, {
      cause: err,
    });
  }
  try {
    cert = new X509Certificate(material.cert);
  } catch (err) {
    throw new InvalidKeyFileError(`Server certificate ${label(names?.certFile, "")} is not a valid X.509 certificate`, {
      cause: err,
    });
  }
  let key;
  try {
    key = createPrivateKey(material.key);
  } catch (err) {
    throw new InvalidKeyFileError(`Server private key ${label(names?.keyFile, "")} is not a valid PEM private key`, {
      cause: err,
    });
  }
  if (!cert.checkPrivateKey(key)) {
    throw new InvalidKeyFileError(
      `Server private key ${label(names?.keyFile, "")} does not belong to certificate ${label(names?.certFile, "")}`,
    );
  }
  const notAfter = Date.parse(cert.validTo);
  if (Number.isFinite(notAfter) && notAfter < Date.now()) {
    throw new InvalidKeyFileError(`Server certificate ${label(names?.certFile, "")} expired on ${cert.validTo}`);
  }
}

/**
 * Server credentials: TLS from material, or plaintext when `material` is undefined (--insecure).
 * With `clientCa`, only clients presenting a certificate that this CA signed (valid now, usable
 * for client authentication) complete the handshake.
 */
export function serverCredentials(
  material: ServerTlsMaterial | undefined,
  opts: { clientCa?: Buffer } = {},
): grpc.ServerCredentials {
  if (material === undefined) {
    if (opts.clientCa !== undefined)
      throw new InvalidConfigError("Client certificates (mutual TLS) need TLS: drop --insecure");
    return grpc.ServerCredentials.createInsecure();
  }
  const keyCertPairs = [{ private_key: material.key, cert_chain: material.cert }];
  if (opts.clientCa !== undefined) return grpc.ServerCredentials.createSsl(opts.clientCa, keyCertPairs, true);
  // No client certificates to check, so no CA for grpc-js to put in the TLS context: OpenSSL
  // would append it to the certificate file's chain in every handshake, and each client would
  // parse and check a certificate it already trusts (~1 ms of CPU per connection, both ends
  // together). As Flower's server: the chain sent is the certificate file's.
  return grpc.ServerCredentials.createSsl(null, keyCertPairs, false);
}

/**
 * Reads the CA that signs Driver API clients (--driver-api-client-ca): a PEM bundle of CA
 * certificates, none expired. A leaf certificate here would admit nobody, so it is refused.
 */
export function readClientCaFile(path: string, flag: string): Buffer {
  const data = readPemFile(path, `${flag} CA certificate`);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(data);
  } catch (err) {
    throw new InvalidKeyFileError(`${flag} "${path}" does not contain a valid X.509 certificate`, { cause: err });
  }
  if (!cert.ca) {
    throw new InvalidKeyFileError(
      `${flag} "${path}" is not a CA certificate (${cert.subject.replace(/\n/g, ", ")}): pass the CA that signed the ` +
        "ServerApp client certificates (scripts/generate.sh writes certificates/serverapp-ca.crt)",
    );
  }
  const notAfter = Date.parse(cert.validTo);
  if (Number.isFinite(notAfter) && notAfter < Date.now()) {
    throw new InvalidKeyFileError(`${flag} "${path}" expired on ${cert.validTo}`);
  }
  return data;
}

/** A client certificate chain and its private key (PEM), presented to a mutual-TLS server. */
export interface ClientCertificate {
  cert: Buffer;
  key: Buffer;
}

/**
 * Reads a client certificate and its key (flower-server-app --ssl-certfile / --ssl-keyfile),
 * failing early on a key that does not match or a certificate that has expired: the server
 * would only answer with a bare handshake alert.
 */
export function readClientCertificateFiles(files: { certFile: string; keyFile: string }): ClientCertificate {
  const material = {
    cert: readPemFile(files.certFile, "client certificate"),
    key: readPemFile(files.keyFile, "client private key"),
  };
  checkClientCertificate(material, files);
  return material;
}

/** The checks of readClientCertificateFiles, for material given as bytes (library callers). */
export function checkClientCertificate(
  material: ClientCertificate,
  names?: { certFile?: string; keyFile?: string },
): void {
  const certName = names?.certFile !== undefined ? `"${names.certFile}"` : "(clientCertificate.cert)";
  const keyName = names?.keyFile !== undefined ? `"${names.keyFile}"` : "(clientCertificate.key)";
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(material.cert);
  } catch (err) {
    throw new InvalidKeyFileError(`Client certificate ${certName} is not a valid X.509 certificate`, { cause: err });
  }
  let key;
  try {
    key = createPrivateKey(material.key);
  } catch (err) {
    throw new InvalidKeyFileError(`Client private key ${keyName} is not a valid PEM private key`, { cause: err });
  }
  if (!cert.checkPrivateKey(key)) {
    throw new InvalidKeyFileError(`Client private key ${keyName} does not belong to certificate ${certName}`);
  }
  const notAfter = Date.parse(cert.validTo);
  if (Number.isFinite(notAfter) && notAfter < Date.now()) {
    throw new InvalidKeyFileError(`Client certificate ${certName} expired on ${cert.validTo}`);
  }
}

/**
 * Channel credentials for SuperNode / ServerApp. `rootCertificates` = CA bundle (PEM); with
 * neither a bundle nor `insecure`, the system trust store is used. `clientCertificate` is
 * presented to a server that asks for one (a Driver API with mutual TLS).
 */
export function channelCredentials(opts: {
  rootCertificates?: Buffer;
  insecure?: boolean;
  clientCertificate?: ClientCertificate;
}): grpc.ChannelCredentials {
  if (opts.insecure && opts.rootCertificates !== undefined) {
    throw new InvalidConfigError("Conflicting options: --insecure and --root-certificates cannot be used together");
  }
  if (opts.insecure && opts.clientCertificate !== undefined) {
    throw new InvalidConfigError(
      "Conflicting options: --insecure and a client certificate (--ssl-certfile) cannot be used together",
    );
  }
  if (opts.insecure) return grpc.credentials.createInsecure();
  const client = opts.clientCertificate;
  return grpc.credentials.createSsl(opts.rootCertificates ?? null, client?.key ?? null, client?.cert ?? null);
}

/** Most CA bundles whose credentials `sharedChannelCredentials` keeps. */
const SHARED_CREDENTIALS_LIMIT = 8;
const sharedCredentials = new Map<string, grpc.ChannelCredentials>();

/**
 * `channelCredentials` without a client certificate, made once per CA bundle (by content) and
 * reused: each set of credentials parses its CA bundle into a new TLS context (~0.5 ms), which
 * many SuperNodes in one process (bench idle workers, library users) would pay per node. grpc-js
 * shares connections between channels with equal credentials, so a channel using these must set
 * `grpc.use_local_subchannel_pool` to keep a connection of its own.
 */
export function sharedChannelCredentials(opts: {
  rootCertificates?: Buffer;
  insecure?: boolean;
}): grpc.ChannelCredentials {
  if (opts.insecure) return channelCredentials(opts);
  const key = opts.rootCertificates?.toString("latin1") ?? "";
  let credentials = sharedCredentials.get(key);
  if (credentials === undefined) {
    credentials = channelCredentials(opts);
    if (sharedCredentials.size >= SHARED_CREDENTIALS_LIMIT) sharedCredentials.clear();
    sharedCredentials.set(key, credentials);
  }
  return credentials;
}

/** Reads a CA bundle given on the command line, with a clear error. */
export function readRootCertificates(path: string): Buffer {
  const data = readPemFile(path, "root certificates");
  try {
    new X509Certificate(data);
  } catch (err) {
    throw new InvalidKeyFileError(`Root certificates "${path}" do not contain a valid X.509 certificate`, {
      cause: err,
    });
  }
  return data;
}
