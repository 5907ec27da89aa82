/**
 * `--node-config` parsing, as Flower 1.10's `parse_config_args`: a comma-separated list of
 * TOML `key=value` pairs (`partition-id=0,num-partitions=2,name="a"`), or the path of a
 * `.toml` file whose tables are flattened to dotted keys. Values are TOML scalars: integers
 * become `bigint` (sint64 on the wire), floats `number`, `true`/`false` booleans, quoted text
 * strings. Unlike Flower, a comma inside a quoted string does not split the pair.
 */
import { readFileSync } from "node:fs";
import { InvalidConfigError, errorMessage } from "../core/errors";
import type { ConfigsScalar } from "../core/records/types";

export type NodeConfig = Record<string, ConfigsScalar>;

/** Parses the `--node-config` value; undefined or "" gives `{}`. Throws InvalidConfigError. */
export function parseNodeConfig(text: string | undefined): NodeConfig {
  if (text === undefined || text.trim() === "") return {};
  const items = splitOutsideQuotes(text, ",");
  if (items.length === 1 && !items[0]!.includes("=") && items[0]!.trim().endsWith(".toml")) {
    return parseTomlFile(items[0]!.trim());
  }
  const config: NodeConfig = {};
  for (const item of items) {
    if (item.trim() === "") continue;
    parseAssignment(item, "", config, `--node-config item "${item.trim()}"`);
  }
  return config;
}

/** Reads a flat TOML file (tables flattened to "table.key"); throws InvalidConfigError. */
function parseTomlFile(path: string): NodeConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new InvalidConfigError(`Cannot read --node-config file "${path}": ${errorMessage(err)}`, { cause: err });
  }
  const config: NodeConfig = {};
  let table = "";
  text.split(/\r?\n/).forEach((rawLine, index) => {
    const line = stripComment(rawLine).trim();
    if (line === "") return;
    const where = `--node-config file "${path}", line ${index + 1}`;
    const header = /^\[\s*([^[\]]+?)\s*\]$/.exec(line);
    if (header) {
      table = parseKey(header[1]!, where) + ".";
      return;
    }
    parseAssignment(line, table, config, where);
  });
  return config;
}

function parseAssignment(item: string, prefix: string, into: NodeConfig, where: string): void {
  const eq = indexOutsideQuotes(item, "=");
  if (eq < 0) throw new InvalidConfigError(`${where}: expected key=value`);
  const key = prefix + parseKey(item.slice(0, eq).trim(), where);
  if (Object.prototype.hasOwnProperty.call(into, key)) {
    throw new InvalidConfigError(`${where}: key "${key}" is given twice`);
  }
  into[key] = parseTomlScalar(item.slice(eq + 1).trim(), `${where} (key "${key}")`);
}

/** A bare, quoted or dotted TOML key, flattened to one string. */
function parseKey(text: string, where: string): string {
  if (text === "") throw new InvalidConfigError(`${where}: empty key`);
  const parts = splitOutsideQuotes(text, ".").map((p) => p.trim());
  return parts
    .map((part) => {
      if (/^[A-Za-z0-9_-]+$/.test(part)) return part;
      if (/^"(?:[^"\\]|\\.)*"$/.test(part) || /^'[^']*'$/.test(part)) return parseTomlScalar(part, where) as string;
      throw new InvalidConfigError(`${where}: invalid key "${text}" (use letters, digits, "_" and "-", or quote it)`);
    })
    .join(".");
}

const INTEGER = /^[+-]?(0|[1-9](_?[0-9])*)$/;
const PREFIXED_INTEGER = /^(0x[0-9A-Fa-f](_?[0-9A-Fa-f])*|0o[0-7](_?[0-7])*|0b[01](_?[01])*)$/;
const FLOAT = /^[+-]?(0|[1-9](_?[0-9])*)(\.[0-9](_?[0-9])*)?([eE][+-]?[0-9](_?[0-9])*)?$/;

/** One TOML scalar value: string, integer (bigint), float (number) or boolean. */
export function parseTomlScalar(text: string, where = "value"): ConfigsScalar {
  if (text.startsWith('"')) return parseBasicString(text, where);
  if (text.startsWith("'")) {
    if (text.length >= 2 && text.endsWith("'") && !text.slice(1, -1).includes("'")) return text.slice(1, -1);
    throw new InvalidConfigError(`${where}: unterminated string ${text}`);
  }
  if (text === "true") return true;
  if (text === "false") return false;
  if (INTEGER.test(text)) return BigInt(text.replace(/_/g, ""));
  if (PREFIXED_INTEGER.test(text)) return BigInt(text.replace(/_/g, ""));
  if (FLOAT.test(text)) return Number(text.replace(/_/g, ""));
  if (/^[+-]?inf$/.test(text)) return text.startsWith("-") ? -Infinity : Infinity;
  if (/^[+-]?nan$/.test(text)) return NaN;
  if (text === "") throw new InvalidConfigError(`${where}: missing value`);
  if (text.startsWith("[") || text.startsWith("{")) {
    throw new InvalidConfigError(`${where}: only scalar values (numbers, booleans, strings) are supported`);
  }
  throw new InvalidConfigError(`${where}: cannot parse ${text}; quote text values, e.g. name="${text}"`);
}

const ESCAPES: Record<string, string> = { b: "\b", t: "\t", n: "\n", f: "\f", r: "\r", '"': '"', "\\": "\\" };

function parseBasicString(text: string, where: string): string {
  let out = "";
  for (let i = 1; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === '"') {
      if (i !== text.length - 1)
        throw new InvalidConfigError(`${where}: unexpected text after the closing quote in ${text}`);
      return out;
    }
    if (ch !== "\\") {
      out += ch;
      continue;
    }
    const esc = text[++i];
    const escaped = esc === undefined ? undefined : ESCAPES[esc];
    if (escaped !== undefined) {
      out += escaped;
    } else if (esc === "u" || esc === "U") {
      const len = esc === "u" ? 4 : 8;
      const hex = text.slice(i + 1, i + 1 + len);
      if (!new RegExp(`^[0-9A-Fa-f]{${len}}$`).test(hex)) throw new InvalidConfigError(`${where}: bad \\${esc} escape`);
      out += String.fromCodePoint(parseInt(hex, 16));
      i += len;
    } else {
      throw new InvalidConfigError(`${where}: unknown escape \\${esc ?? ""}`);
    }
  }
  throw new InvalidConfigError(`${where}: unterminated string ${text}`);
}

function stripComment(line: string): string {
  const hash = indexOutsideQuotes(line, "#");
  return hash < 0 ? line : line.slice(0, hash);
}

/** Index of the first `sep` that is not inside "..." or '...'; -1 if none. */
function indexOutsideQuotes(text: string, sep: string): number {
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quote === '"' && ch === "\\") {
      i++;
    } else if (quote !== undefined) {
      if (ch === quote) quote = undefined;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
    } else if (ch === sep) {
      return i;
    }
  }
  return -1;
}

function splitOutsideQuotes(text: string, sep: string): string[] {
  const parts: string[] = [];
  let rest = text;
  for (let i = indexOutsideQuotes(rest, sep); i >= 0; i = indexOutsideQuotes(rest, sep)) {
    parts.push(rest.slice(0, i));
    rest = rest.slice(i + 1);
  }
  parts.push(rest);
  return parts;
}
