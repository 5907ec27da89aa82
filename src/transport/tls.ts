/**
 * TLS material -> grpc-js credentials. The SuperLink serves TLS without requesting client
 * certificates (as Flower does); clients verify the server against a given CA bundle.
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
    throw new InvalidKeyFileError(`CA certificate ${label(names?.caCertFile, "")} is not a valid X.509 certificate`, { cause: err });
  }
  try {
    cert = new X509Certificate(material.cert);
  } catch (err) {
    throw new InvalidKeyFileError(`Server certificate ${label(names?.certFile, "")} is not a valid X.509 certificate`, { cause: err });
  }
  let key;
  try {
    key = createPrivateKey(material.key);
  } catch (err) {
    throw new InvalidKeyFileError(`Server private key ${label(names?.keyFile, "")} is not a valid PEM private key`, { cause: err });
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

/** Server credentials: TLS from material, or plaintext when `material` is undefined (--insecure). */
export function serverCredentials(material: ServerTlsMaterial | undefined): grpc.ServerCredentials {
  if (material === undefined) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(material.caCert, [{ private_key: material.key, cert_chain: material.cert }], false);
}

/**
 * Channel credentials for SuperNode / ServerApp. `rootCertificates` = CA bundle (PEM); with
 * neither a bundle nor `insecure`, the system trust store is used.
 */
export function channelCredentials(opts: { rootCertificates?: Buffer; insecure?: boolean }): grpc.ChannelCredentials {
  if (opts.insecure && opts.rootCertificates !== undefined) {
    throw new InvalidConfigError("Conflicting options: --insecure and --root-certificates cannot be used together");
  }
  if (opts.insecure) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(opts.rootCertificates ?? null);
}

/** Reads a CA bundle given on the command line, with a clear error. */
export function readRootCertificates(path: string): Buffer {
  const data = readPemFile(path, "root certificates");
  try {
    new X509Certificate(data);
  } catch (err) {
    throw new InvalidKeyFileError(`Root certificates "${path}" do not contain a valid X.509 certificate`, { cause: err });
  }
  return data;
}
