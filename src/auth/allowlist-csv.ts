/**
 * The SuperLink's allowlist file: a CSV in which every field is one OpenSSH public key. Parsed
 * the way Python's `csv.reader` reads it, each key reduced to its canonical PEM (keys.ts).
 */
import { InvalidKeyFileError, errorMessage } from "../core/errors";
import { parseOpenSshPublicKey, readKeyTextFile } from "./keys";

interface CsvRow {
  /** 1-based line where the row starts. */
  line: number;
  fields: string[];
}

const COMMA = 0x2c;
const CR = 0x0d;
const LF = 0x0a;
const QUOTE = 0x22;

/**
 * Python's `csv.reader` with the default "excel" dialect: `,` separates fields, a field that
 * starts with `"` is quoted (`""` inside is a literal quote, newlines are kept), characters after
 * a closing quote are appended, and `\r`, `\n` or `\r\n` ends a row. An empty line is a row
 * without fields. Runs of plain characters are sliced, not appended one by one: a 10,000-key
 * file would otherwise leave ~2 million intermediate strings (~100 MB of heap) to collect.
 */
function parseCsv(text: string): CsvRow[] {
  const rows: CsvRow[] = [];
  let line = 1;
  let i = 0;
  while (i < text.length) {
    const startLine = line;
    const fields: string[] = [];
    let field = "";
    let fieldStarted = false;
    let inQuotes = false;
    let atFieldStart = true;
    let rowEnded = false;
    while (i < text.length) {
      if (inQuotes) {
        const quote = text.indexOf('"', i);
        const end = quote < 0 ? text.length : quote;
        line += lineBreaksIn(text, i, end);
        field += text.slice(i, end);
        if (quote < 0) {
          i = end;
          break;
        }
        if (text[quote + 1] === '"') {
          field += '"';
          i = quote + 2;
          continue;
        }
        inQuotes = false;
        i = quote + 1;
        continue;
      }
      const ch = text.charCodeAt(i);
      if (ch === COMMA) {
        fields.push(field);
        field = "";
        fieldStarted = true;
        atFieldStart = true;
        i++;
        continue;
      }
      if (ch === CR || ch === LF) {
        i += ch === CR && text.charCodeAt(i + 1) === LF ? 2 : 1;
        line++;
        rowEnded = true;
        break;
      }
      if (ch === QUOTE && atFieldStart) {
        inQuotes = true;
        fieldStarted = true;
        atFieldStart = false;
        i++;
        continue;
      }
      // A run of plain characters: a quote is only special at the start of a field.
      let end = i + 1;
      while (end < text.length) {
        const next = text.charCodeAt(end);
        if (next === COMMA || next === CR || next === LF) break;
        end++;
      }
      field += text.slice(i, end);
      fieldStarted = true;
      atFieldStart = false;
      i = end;
    }
    if (inQuotes) throw new Error(`unexpected end of file inside a quoted field starting on line ${startLine}`);
    if (fieldStarted || field !== "") fields.push(field);
    rows.push({ line: startLine, fields });
    if (!rowEnded) break;
  }
  return rows;
}

/** Line breaks in text[start, end): `\n`, and `\r` not followed by `\n`. */
function lineBreaksIn(text: string, start: number, end: number): number {
  let breaks = 0;
  for (let k = start; k < end; k++) {
    const ch = text.charCodeAt(k);
    if (ch === LF || (ch === CR && text.charCodeAt(k + 1) !== LF)) breaks++;
  }
  return breaks;
}

/**
 * Reads the SuperLink's allowlist: a CSV file in which every field of every row is one OpenSSH
 * public key (`ecdsa-sha2-nistpNNN <base64>`), and returns the set of canonical PEMs.
 * Accepts the single-line file generate.sh writes, one key per line, blank lines, CRLF, a
 * trailing newline and quoted fields. Unlike Python, whitespace around a field is trimmed and
 * empty fields (a trailing comma) are skipped, since neither can be meant as a key. Throws
 * InvalidKeyFileError for a missing file or a bad field, naming the file, row and column.
 */
export function loadAllowlistCsv(path: string): Set<string> {
  const text = readKeyTextFile(path, "allowlist CSV");
  let rows: CsvRow[];
  try {
    rows = parseCsv(text);
  } catch (err) {
    throw new InvalidKeyFileError(`invalid allowlist CSV ${path}: ${errorMessage(err)}`, { cause: err });
  }
  const keys = new Set<string>();
  for (const { line, fields } of rows) {
    fields.forEach((field, index) => {
      const element = field.trim();
      if (element === "") return;
      keys.add(parseOpenSshPublicKey(element, `${path} (row ${line}, column ${index + 1})`));
    });
  }
  return keys;
}
