/** host:port parsing, IPv6 included ("[::1]:9092"). */
import { InvalidConfigError } from "./errors";

export interface HostPort {
  host: string;
  port: number;
}

export function parseAddress(address: string): HostPort {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:[\]]+):(\d+)$/.exec(address);
  if (!m) {
    throw new InvalidConfigError(`Invalid address "${address}": expected HOST:PORT or [IPv6]:PORT`);
  }
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidConfigError(`Invalid port in address "${address}": must be 0-65535`);
  }
  return { host: m[1]!, port };
}

export function formatAddress({ host, port }: HostPort): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
