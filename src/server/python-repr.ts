/**
 * Python's `repr()` and `pprint.pformat()` for the few value kinds Flower prints, so that the
 * History text of a flwr-ts ServerApp is byte-for-byte what Flower 1.10 prints (docs/protocol.md, "Strategy loop and History").
 *
 * The Python object model used here:
 *   number -> float, bigint -> int, boolean -> bool, string -> str, Uint8Array -> bytes,
 *   null -> None, Array -> list, PyTuple -> tuple, Map -> dict.
 */

/** A Python tuple (JS arrays stand for lists). */
export class PyTuple {
  readonly items: readonly PyValue[];
  constructor(items: readonly PyValue[]) {
    this.items = items;
  }
}

export type PyValue =
  null | boolean | number | bigint | string | Uint8Array | PyTuple | PyValue[] | Map<PyKey, PyValue>;
type PyKey = string | bigint | number | boolean;

/**
 * `repr(float)`: the shortest digits that round-trip (as JS), laid out as CPython does —
 * fixed notation for 1e-4 <= |x| < 1e16 with a trailing ".0" when integral, otherwise
 * scientific with at least two exponent digits ("1e-05", "1.5e+16").
 */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return "nan";
  if (x === Infinity) return "inf";
  if (x === -Infinity) return "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const sign = x < 0 ? "-" : "";
  const [mantissa, expText] = Math.abs(x).toExponential().split("e") as [string, string];
  const digits = mantissa.replace(".", "");
  const exp = Number(expText);
  if (exp >= -4 && exp < 16) {
    if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
    const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
    const fracPart = digits.slice(exp + 1);
    return `${sign}${intPart}.${fracPart === "" ? "0" : fracPart}`;
  }
  const frac = digits.length > 1 ? `.${digits.slice(1)}` : "";
  const expAbs = String(Math.abs(exp)).padStart(2, "0");
  return `${sign}${digits.charAt(0)}${frac}e${exp < 0 ? "-" : "+"}${expAbs}`;
}

// Characters `str.isprintable()` rejects: control, format, surrogate, private-use, unassigned,
// and separators other than the ASCII space.
const NON_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, "0");
}

/** `repr(str)`: single quotes unless the text has ' and no ", Python's escapes. */
export function pyStrRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === quote || ch === "\\") out += "\\" + ch;
    else if (ch === "\t") out += "\\t";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (cp < 0x20 || cp === 0x7f) out += "\\x" + hex(cp, 2);
    else if (cp < 0x7f) out += ch;
    else if (ch !== " " && NON_PRINTABLE.test(ch)) {
      out += cp <= 0xff ? "\\x" + hex(cp, 2) : cp <= 0xffff ? "\\u" + hex(cp, 4) : "\\U" + hex(cp, 8);
    } else out += ch;
  }
  return out + quote;
}

/** `repr(bytes)`: b'...' with printable ASCII kept and everything else as \xNN. */
function pyBytesRepr(b: Uint8Array): string {
  const hasSingle = b.includes(0x27);
  const quote = hasSingle && !b.includes(0x22) ? '"' : "'";
  let out = "b" + quote;
  for (const byte of b) {
    const ch = String.fromCharCode(byte);
    if (ch === quote || ch === "\\") out += "\\" + ch;
    else if (ch === "\t") out += "\\t";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (byte < 0x20 || byte >= 0x7f) out += "\\x" + hex(byte, 2);
    else out += ch;
  }
  return out + quote;
}

/** Python ordering of dict keys of one kind (code-point order for str), as `sorted()` does. */
function compareKeys(a: PyKey, b: PyKey): number {
  if (typeof a === "string" && typeof b === "string") {
    // eslint-disable-next-line @typescript-eslint/no-misused-spread -- code points, as Python compares str
    const ca = [...a];
    // eslint-disable-next-line @typescript-eslint/no-misused-spread -- as above
    const cb = [...b];
    for (let i = 0; i < Math.min(ca.length, cb.length); i++) {
      const d = ca[i]!.codePointAt(0)! - cb[i]!.codePointAt(0)!;
      if (d !== 0) return d;
    }
    return ca.length - cb.length;
  }
  const na = typeof a === "boolean" ? Number(a) : a;
  const nb = typeof b === "boolean" ? Number(b) : b;
  if (typeof na !== "string" && typeof nb !== "string") return na < nb ? -1 : na > nb ? 1 : 0;
  // Mixed key types: pprint falls back to ordering by type name, then value.
  const ta = typeName(a);
  const tb = typeName(b);
  return ta < tb ? -1 : ta > tb ? 1 : 0;
}

function typeName(v: PyKey): string {
  switch (typeof v) {
    case "string":
      return "str";
    case "bigint":
      return "int";
    case "number":
      return "float";
    default:
      return "bool";
  }
}

function sortedEntries(m: Map<PyKey, PyValue>): Array<[PyKey, PyValue]> {
  return [...m.entries()].sort(([a], [b]) => compareKeys(a, b));
}

/** `repr()` of a value; dict keys sorted as `pprint` does (sort_dicts=True). */
export function pyRepr(v: PyValue): string {
  if (v === null) return "None";
  switch (typeof v) {
    case "boolean":
      return v ? "True" : "False";
    case "number":
      return pyFloatRepr(v);
    case "bigint":
      return v.toString();
    case "string":
      return pyStrRepr(v);
    default:
      break; // objects: below
  }
  if (v instanceof Uint8Array) return pyBytesRepr(v);
  if (v instanceof PyTuple) {
    if (v.items.length === 1) return `(${pyRepr(v.items[0]!)},)`;
    return `(${v.items.map(pyRepr).join(", ")})`;
  }
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(", ")}]`;
  return `{${sortedEntries(v)
    .map(([k, val]) => `${pyRepr(k)}: ${pyRepr(val)}`)
    .join(", ")}}`;
}

/** Python's len() of a str: code points, not UTF-16 units. */
function pyLen(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/**
 * `pprint.pformat(value, width=width)` with the defaults Flower uses (indent 1, sort_dicts,
 * not compact). Values that fit in the remaining width print as their repr; longer dicts,
 * lists and tuples break one item per line; long strings split at whitespace.
 */
export function pformat(value: PyValue, width = 80): string {
  return new PrettyPrinter(width).format(value);
}

class PrettyPrinter {
  private out = "";
  constructor(private readonly width: number) {}

  format(value: PyValue): string {
    this.out = "";
    this.formatValue(value, 0, 0, 0);
    return this.out;
  }

  private formatValue(v: PyValue, indent: number, allowance: number, level: number): void {
    const rep = pyRepr(v);
    const maxWidth = this.width - indent - allowance;
    if (pyLen(rep) > maxWidth) {
      if (v instanceof Map) {
        this.printDict(v, indent, allowance, level + 1);
        return;
      }
      if (v instanceof PyTuple) {
        this.printSequence(v.items, "(", v.items.length === 1 ? ",)" : ")", indent, allowance, level + 1);
        return;
      }
      if (Array.isArray(v)) {
        this.printSequence(v, "[", "]", indent, allowance, level + 1);
        return;
      }
      if (typeof v === "string") {
        this.printStr(v, indent, allowance, level + 1);
        return;
      }
    }
    this.out += rep;
  }

  private printDict(m: Map<PyKey, PyValue>, indent: number, allowance: number, level: number): void {
    this.out += "{";
    const items = sortedEntries(m);
    const itemIndent = indent + 1;
    items.forEach(([key, val], i) => {
      const last = i === items.length - 1;
      const keyRep = pyRepr(key);
      this.out += keyRep + ": ";
      this.formatValue(val, itemIndent + pyLen(keyRep) + 2, last ? allowance + 1 : 1, level);
      if (!last) this.out += ",\n" + " ".repeat(itemIndent);
    });
    this.out += "}";
  }

  private printSequence(
    items: readonly PyValue[],
    open: string,
    close: string,
    indent: number,
    allowance: number,
    level: number,
  ): void {
    this.out += open;
    const itemIndent = indent + 1;
    const itemsAllowance = allowance + close.length;
    items.forEach((item, i) => {
      const last = i === items.length - 1;
      if (i > 0) this.out += ",\n" + " ".repeat(itemIndent);
      this.formatValue(item, itemIndent, last ? itemsAllowance : 1, level);
    });
    this.out += close;
  }

  private printStr(s: string, indent: number, allowance: number, level: number): void {
    if (s.length === 0) {
      this.out += pyRepr(s);
      return;
    }
    const chunks: string[] = [];
    const lines = splitLinesKeepEnds(s);
    if (level === 1) {
      indent += 1;
      allowance += 1;
    }
    const maxWidth = this.width - indent;
    let maxWidth1 = maxWidth;
    let lastRep = "";
    lines.forEach((line, i) => {
      const rep = pyStrRepr(line);
      lastRep = rep;
      const lastLine = i === lines.length - 1;
      if (lastLine) maxWidth1 -= allowance;
      if (pyLen(rep) <= maxWidth1) {
        chunks.push(rep);
        return;
      }
      const parts = line.match(/\S*\s*/gu)!.filter((p, j, all) => !(p === "" && j === all.length - 1));
      let maxWidth2 = maxWidth;
      let current = "";
      parts.forEach((part, j) => {
        const candidate = current + part;
        if (j === parts.length - 1 && lastLine) maxWidth2 -= allowance;
        if (pyLen(pyStrRepr(candidate)) > maxWidth2) {
          if (current) chunks.push(pyStrRepr(current));
          current = part;
        } else {
          current = candidate;
        }
      });
      if (current) chunks.push(pyStrRepr(current));
    });
    if (chunks.length === 1) {
      this.out += lastRep;
      return;
    }
    if (level === 1) this.out += "(";
    chunks.forEach((chunk, i) => {
      if (i > 0) this.out += "\n" + " ".repeat(indent);
      this.out += chunk;
    });
    if (level === 1) this.out += ")";
  }
}

/** Python's `str.splitlines(True)` for the common line breaks. */
function splitLinesKeepEnds(s: string): string[] {
  const lines =
    s.match(/[^\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]*(\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]|$)/gu) ?? [];
  return lines.filter((l) => l !== "");
}
