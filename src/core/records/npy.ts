/**
 * NumPy `.npy` codec: the byte format Flower uses for every tensor (`ndarray_to_bytes` is
 * `np.save(..., allow_pickle=False)`, `bytes_to_ndarray` is `np.load(..., allow_pickle=False)`).
 *
 * Writing reproduces NumPy (1.x and 2.x) byte for byte: format version 1.0, the header dict
 * `{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }` followed by NumPy's reserved
 * growth space, padded with spaces and a final '\n' so that the preamble is a multiple of 64.
 * Reading accepts what `np.load(allow_pickle=False)` accepts for the supported dtypes:
 * versions 1.0/2.0/3.0, any header length, Fortran order, little- and big-endian descrs.
 */
import { MalformedMessageError } from "../errors";
import type { DType, NDArray, TypedArrayFor } from "./types";

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
const MAGIC_LEN = MAGIC.length + 2; // magic + version bytes
/** NumPy pads the preamble so the data starts on this boundary. */
const ARRAY_ALIGN = 64;
/** NumPy reserves room in the header for the first axis to grow to this many digits. */
const GROWTH_AXIS_MAX_DIGITS = 21;

interface DTypeInfo {
  itemSize: number;
  /** The descr NumPy writes (little-endian, or '|' when byte order is meaningless). */
  descr: string;
  create(length: number): TypedArrayFor<DType>;
  /** A view of `length` elements at the start of `buffer` (which must be freshly allocated). */
  view(buffer: ArrayBuffer, length: number): TypedArrayFor<DType>;
  matches(data: unknown): boolean;
}

const DTYPES: Record<DType, DTypeInfo> = {
  float32: {
    itemSize: 4,
    descr: "<f4",
    create: (n) => new Float32Array(n),
    view: (b, n) => new Float32Array(b, 0, n),
    matches: (d) => d instanceof Float32Array,
  },
  float64: {
    itemSize: 8,
    descr: "<f8",
    create: (n) => new Float64Array(n),
    view: (b, n) => new Float64Array(b, 0, n),
    matches: (d) => d instanceof Float64Array,
  },
  int8: {
    itemSize: 1,
    descr: "|i1",
    create: (n) => new Int8Array(n),
    view: (b, n) => new Int8Array(b, 0, n),
    matches: (d) => d instanceof Int8Array,
  },
  uint8: {
    itemSize: 1,
    descr: "|u1",
    create: (n) => new Uint8Array(n),
    view: (b, n) => new Uint8Array(b, 0, n),
    matches: (d) => d instanceof Uint8Array,
  },
  int16: {
    itemSize: 2,
    descr: "<i2",
    create: (n) => new Int16Array(n),
    view: (b, n) => new Int16Array(b, 0, n),
    matches: (d) => d instanceof Int16Array,
  },
  int32: {
    itemSize: 4,
    descr: "<i4",
    create: (n) => new Int32Array(n),
    view: (b, n) => new Int32Array(b, 0, n),
    matches: (d) => d instanceof Int32Array,
  },
  int64: {
    itemSize: 8,
    descr: "<i8",
    create: (n) => new BigInt64Array(n),
    view: (b, n) => new BigInt64Array(b, 0, n),
    matches: (d) => d instanceof BigInt64Array,
  },
  bool: {
    itemSize: 1,
    descr: "|b1",
    create: (n) => new Uint8Array(n),
    view: (b, n) => new Uint8Array(b, 0, n),
    matches: (d) => d instanceof Uint8Array,
  },
};

/** `descr` type code + size -> dtype; the byte-order character is handled separately. */
const DTYPE_BY_CODE: Record<string, DType> = {
  f4: "float32",
  f8: "float64",
  i1: "int8",
  u1: "uint8",
  i2: "int16",
  i4: "int32",
  i8: "int64",
  b1: "bool",
};

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Number of elements of a shape; validates that every axis is a non-negative safe integer. */
function elementCount(shape: readonly number[], what: string): number {
  let count = 1;
  for (const dim of shape) {
    if (!Number.isSafeInteger(dim) || dim < 0) {
      throw new MalformedMessageError(`${what}: shape ${JSON.stringify(shape)} has an invalid axis length ${dim}`);
    }
    count *= dim;
  }
  if (!Number.isSafeInteger(count)) {
    throw new MalformedMessageError(`${what}: shape ${JSON.stringify(shape)} has too many elements`);
  }
  return count;
}

function reverseEachItem(bytes: Uint8Array, itemSize: number): void {
  if (itemSize === 1) return;
  for (let i = 0; i < bytes.length; i += itemSize) {
    bytes.subarray(i, i + itemSize).reverse();
  }
}

/** Python `repr` of a shape tuple: `()`, `(2,)`, `(2, 3)`. */
function shapeRepr(shape: readonly number[]): string {
  if (shape.length === 1) return `(${shape.join("")},)`;
  return `(${shape.join(", ")})`;
}

/** Builds magic + version + header length + padded header, choosing the version as NumPy does. */
function wrapHeader(header: string): Uint8Array {
  // NumPy tries 1.0 (uint16 length), then 2.0 (uint32 length); headers here are ASCII only,
  // so 3.0 (UTF-8) is never needed.
  const headerBytes = Buffer.from(header, "latin1");
  for (const [major, lengthSize] of [
    [1, 2],
    [2, 4],
  ] as const) {
    const withNewline = headerBytes.length + 1;
    const padding = ARRAY_ALIGN - ((MAGIC_LEN + lengthSize + withNewline) % ARRAY_ALIGN);
    const totalHeader = withNewline + padding;
    if (lengthSize === 2 && totalHeader > 0xffff) continue;
    const out = new Uint8Array(MAGIC_LEN + lengthSize + totalHeader);
    out.set(MAGIC, 0);
    out[6] = major;
    out[7] = 0;
    const view = new DataView(out.buffer);
    if (lengthSize === 2) view.setUint16(8, totalHeader, true);
    else view.setUint32(8, totalHeader, true);
    const start = MAGIC_LEN + lengthSize;
    out.set(headerBytes, start);
    out.fill(0x20, start + headerBytes.length, out.length - 1);
    out[out.length - 1] = 0x0a;
    return out;
  }
  throw new MalformedMessageError("ndarrayToNpy: header too long for the .npy format");
}

/** Magic, version and padded header of a C-order array, as np.save writes them. */
function npyPreamble(info: DTypeInfo, shape: readonly number[]): Uint8Array {
  let header = `{'descr': '${info.descr}', 'fortran_order': False, 'shape': ${shapeRepr(shape)}, }`;
  if (shape.length > 0) header += " ".repeat(Math.max(0, GROWTH_AXIS_MAX_DIGITS - String(shape[0]).length));
  return wrapHeader(header);
}

/**
 * Serializes an array exactly as `np.save(f, a, allow_pickle=False)` does for a C-contiguous
 * array. Throws MalformedMessageError when the dtype is unknown, the typed array does not
 * match the dtype, or `data.length` differs from the product of `shape`.
 */
export function ndarrayToNpy(a: NDArray): Uint8Array {
  const info = DTYPES[a.dtype];
  if (info === undefined) {
    throw new MalformedMessageError(`ndarrayToNpy: unsupported dtype ${JSON.stringify(a.dtype)}`);
  }
  if (!info.matches(a.data)) {
    throw new MalformedMessageError(
      `ndarrayToNpy: dtype ${a.dtype} needs a ${info.create(0).constructor.name}, got ${
        (a.data as object | undefined)?.constructor?.name ?? typeof a.data
      }`,
    );
  }
  const count = elementCount(a.shape, "ndarrayToNpy");
  if (a.data.length !== count) {
    throw new MalformedMessageError(
      `ndarrayToNpy: shape ${JSON.stringify(a.shape)} needs ${count} elements, data has ${a.data.length}`,
    );
  }
  const preamble = npyPreamble(info, a.shape);

  const dataBytes = count * info.itemSize;
  const out = new Uint8Array(preamble.length + dataBytes);
  out.set(preamble, 0);
  const body = out.subarray(preamble.length);
  body.set(new Uint8Array(a.data.buffer, a.data.byteOffset, dataBytes));
  if (a.dtype === "bool") {
    // numpy's bool is one byte holding exactly 0 or 1.
    for (let i = 0; i < body.length; i++) body[i] = body[i] !== 0 ? 1 : 0;
  }
  if (!HOST_IS_LITTLE_ENDIAN) reverseEachItem(body, info.itemSize);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading

/** The subset of Python literals a .npy header may contain. */
type PyValue = string | number | boolean | null | PyValue[] | { tuple: PyValue[] } | Map<string, PyValue>;

/**
 * A small parser for the Python literal that is the .npy header (what `ast.literal_eval`
 * accepts in practice: dicts, tuples, lists, strings, ints, True/False/None). Python 2 long
 * suffixes (`2L`) are accepted, as NumPy does for format versions 1.0 and 2.0.
 */
class HeaderParser {
  private pos = 0;

  constructor(
    private readonly text: string,
    private readonly allowLongSuffix: boolean,
  ) {}

  parse(): PyValue {
    const value = this.value();
    this.skipSpace();
    if (this.pos !== this.text.length) this.fail("unexpected trailing text");
    return value;
  }

  private fail(why: string): never {
    throw new MalformedMessageError(`npyToNdarray: cannot parse header ${JSON.stringify(this.text)}: ${why}`);
  }

  private skipSpace(): void {
    while (this.pos < this.text.length && /\s/.test(this.text[this.pos]!)) this.pos++;
  }

  private peek(): string | undefined {
    this.skipSpace();
    return this.text[this.pos];
  }

  private expect(ch: string): void {
    if (this.peek() !== ch) this.fail(`expected '${ch}' at offset ${this.pos}`);
    this.pos++;
  }

  private value(): PyValue {
    const ch = this.peek();
    if (ch === "{") return this.dict();
    if (ch === "(") return { tuple: this.sequence("(", ")", true) };
    if (ch === "[") return this.sequence("[", "]", false);
    if (ch === "'" || ch === '"') return this.string();
    if (ch !== undefined && /[-+0-9]/.test(ch)) return this.integer();
    for (const [word, value] of [
      ["True", true],
      ["False", false],
      ["None", null],
    ] as const) {
      if (this.text.startsWith(word, this.pos) && !/\w/.test(this.text[this.pos + word.length] ?? "")) {
        this.pos += word.length;
        return value;
      }
    }
    return this.fail(`unexpected input at offset ${this.pos}`);
  }

  private dict(): Map<string, PyValue> {
    this.expect("{");
    const out = new Map<string, PyValue>();
    while (this.peek() !== "}") {
      const key = this.value();
      if (typeof key !== "string") this.fail("dictionary keys must be strings");
      this.expect(":");
      out.set(key, this.value());
      if (this.peek() === ",") this.pos++;
      else if (this.peek() !== "}") this.fail(`expected ',' or '}' at offset ${this.pos}`);
    }
    this.pos++;
    return out;
  }

  private sequence(open: string, close: string, isTuple: boolean): PyValue[] {
    this.expect(open);
    const items: PyValue[] = [];
    let sawComma = false;
    while (this.peek() !== close) {
      items.push(this.value());
      sawComma = false;
      if (this.peek() === ",") {
        this.pos++;
        sawComma = true;
      } else if (this.peek() !== close) this.fail(`expected ',' or '${close}' at offset ${this.pos}`);
    }
    this.pos++;
    // `(2)` is an int in Python, not a tuple.
    if (isTuple && items.length === 1 && !sawComma) this.fail("a one-element tuple needs a trailing comma");
    return items;
  }

  private string(): string {
    const quote = this.text[this.pos]!;
    this.pos++;
    let out = "";
    while (this.pos < this.text.length && this.text[this.pos] !== quote) {
      let ch = this.text[this.pos]!;
      if (ch === "\\") {
        this.pos++;
        ch = this.text[this.pos] ?? this.fail("unterminated escape");
      }
      out += ch;
      this.pos++;
    }
    if (this.pos >= this.text.length) this.fail("unterminated string");
    this.pos++;
    return out;
  }

  private integer(): number {
    const match = /^[-+]?\d+/.exec(this.text.slice(this.pos));
    if (match === null) return this.fail(`expected an integer at offset ${this.pos}`);
    this.pos += match[0].length;
    if (this.allowLongSuffix && (this.text[this.pos] === "L" || this.text[this.pos] === "l")) this.pos++;
    const value = Number(match[0]);
    if (!Number.isSafeInteger(value)) this.fail(`integer ${match[0]} is too large`);
    return value;
  }
}

/** Maps a numpy `descr` string to a supported dtype and whether its bytes are big-endian. */
function parseDescr(descr: PyValue): { dtype: DType; bigEndian: boolean } {
  if (typeof descr !== "string") {
    throw new MalformedMessageError(
      "npyToNdarray: structured dtypes are not supported " +
        `(descr ${JSON.stringify(descr instanceof Map ? "<dict>" : descr)})`,
    );
  }
  const match = /^([<>|=]?)([a-zA-Z?]+)(\d*)$/.exec(descr);
  if (match !== null && (match[2] === "O" || match[2] === "V")) {
    throw new MalformedMessageError(
      `npyToNdarray: descr ${JSON.stringify(descr)} needs pickling or is an opaque record; ` +
        "refused (allow_pickle=False)",
    );
  }
  const dtype = match === null ? undefined : DTYPE_BY_CODE[`${match[2] ?? ""}${match[3] ?? ""}`];
  if (match === null || dtype === undefined) {
    throw new MalformedMessageError(
      `npyToNdarray: unsupported descr ${JSON.stringify(descr)} (supported: ${Object.values(DTYPES)
        .map((d) => d.descr)
        .join(", ")} and their big-endian forms)`,
    );
  }
  // '=' means "native order of the writer"; NumPy itself never writes it, we read it as '<'.
  return { dtype, bigEndian: match[1] === ">" };
}

function readHeader(bytes: Uint8Array): { headerText: string; dataStart: number; major: number } {
  if (bytes.length < MAGIC_LEN || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new MalformedMessageError("npyToNdarray: not a .npy array (missing \\x93NUMPY magic)");
  }
  const major = bytes[6]!;
  const minor = bytes[7]!;
  if (minor !== 0 || major < 1 || major > 3) {
    throw new MalformedMessageError(`npyToNdarray: unsupported .npy format version ${major}.${minor}`);
  }
  const lengthSize = major === 1 ? 2 : 4;
  if (bytes.length < MAGIC_LEN + lengthSize) {
    throw new MalformedMessageError("npyToNdarray: truncated .npy header length");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = lengthSize === 2 ? view.getUint16(MAGIC_LEN, true) : view.getUint32(MAGIC_LEN, true);
  const headerStart = MAGIC_LEN + lengthSize;
  const dataStart = headerStart + headerLength;
  if (dataStart > bytes.length) {
    throw new MalformedMessageError(
      `npyToNdarray: header says ${headerLength} bytes but only ${bytes.length - headerStart} remain`,
    );
  }
  const headerBytes = bytes.subarray(headerStart, dataStart);
  let headerText: string;
  if (major === 3) {
    try {
      headerText = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
    } catch (cause) {
      throw new MalformedMessageError("npyToNdarray: version 3.0 header is not valid UTF-8", { cause });
    }
  } else {
    headerText = Buffer.from(headerBytes.buffer, headerBytes.byteOffset, headerBytes.byteLength).toString("latin1");
  }
  return { headerText, dataStart, major };
}

/** Reorders Fortran-order (column-major) elements into C order (row-major). */
function fortranToC(src: ArrayLike<unknown>, dst: { length: number; [i: number]: unknown }, shape: number[]): void {
  const rank = shape.length;
  const fStrides = new Array<number>(rank);
  let stride = 1;
  for (let k = 0; k < rank; k++) {
    fStrides[k] = stride;
    stride *= shape[k]!;
  }
  const index = new Array<number>(rank).fill(0);
  for (let c = 0; c < dst.length; c++) {
    let f = 0;
    for (let k = 0; k < rank; k++) f += index[k]! * fStrides[k]!;
    dst[c] = src[f]!;
    // Advance the C-order multi-index (last axis fastest).
    for (let k = rank - 1; k >= 0; k--) {
      if (++index[k]! < shape[k]!) break;
      index[k] = 0;
    }
  }
}

/** What a `.npy` header says, checked against the bytes that follow it. */
export interface NpyLayout {
  dtype: DType;
  shape: number[];
  /** Element count (product of shape). */
  count: number;
  fortranOrder: boolean;
  bigEndian: boolean;
  /** Offset of the first data byte. */
  dataStart: number;
  /** Data bytes (count x item size), exactly what follows the header. */
  dataBytes: number;
}

/**
 * Reads and checks a `.npy` header without touching the data: the same checks as
 * npyToNdarray (which uses it), so a layout returned here means the bytes decode.
 * Throws MalformedMessageError otherwise.
 */
export function readNpyLayout(bytes: Uint8Array): NpyLayout {
  const { headerText, dataStart, major } = readHeader(bytes);
  const header = new HeaderParser(headerText, major <= 2).parse();
  if (!(header instanceof Map)) {
    throw new MalformedMessageError(`npyToNdarray: header is not a dictionary: ${JSON.stringify(headerText)}`);
  }
  const keys = [...header.keys()].sort();
  if (keys.join(",") !== "descr,fortran_order,shape") {
    throw new MalformedMessageError(`npyToNdarray: header does not contain the correct keys: ${JSON.stringify(keys)}`);
  }
  const shapeValue = header.get("shape");
  if (
    typeof shapeValue !== "object" ||
    shapeValue === null ||
    !("tuple" in shapeValue) ||
    !shapeValue.tuple.every((d) => typeof d === "number")
  ) {
    throw new MalformedMessageError(`npyToNdarray: shape is not a tuple of ints in ${JSON.stringify(headerText)}`);
  }
  const shape = shapeValue.tuple;
  const fortranOrder = header.get("fortran_order");
  if (typeof fortranOrder !== "boolean") {
    throw new MalformedMessageError(`npyToNdarray: fortran_order is not a bool in ${JSON.stringify(headerText)}`);
  }
  const { dtype, bigEndian } = parseDescr(header.get("descr")!);
  const info = DTYPES[dtype];

  const count = elementCount(shape, "npyToNdarray");
  const expectedBytes = count * info.itemSize;
  const available = bytes.length - dataStart;
  if (available !== expectedBytes) {
    throw new MalformedMessageError(
      `npyToNdarray: shape ${shapeRepr(shape)} of ${dtype} needs ${expectedBytes} data bytes, found ${available}`,
    );
  }
  return { dtype, shape: [...shape], count, fortranOrder, bigEndian, dataStart, dataBytes: expectedBytes };
}

/**
 * True when the data bytes after the header already are the array's elements in C order and
 * host byte order (what NumPy writes on little-endian machines), so they can be used as they are.
 */
export function npyDataIsNative(layout: NpyLayout): boolean {
  return (
    (!layout.fortranOrder || layout.shape.length <= 1) &&
    (layout.bigEndian !== HOST_IS_LITTLE_ENDIAN || DTYPES[layout.dtype].itemSize === 1) &&
    layout.dtype !== "bool"
  );
}

/**
 * A `.npy` buffer for an array of `dtype` and `shape` whose data is still to be written, and a
 * typed-array view of that data: the header is a multiple of 64 bytes long, so the view is
 * aligned. Writing the view and then sending `bytes` saves a copy of the whole array.
 */
export function allocateNpy<D extends DType>(
  dtype: D,
  shape: readonly number[],
): { bytes: Uint8Array; data: TypedArrayFor<D> } {
  const info = DTYPES[dtype];
  const count = elementCount(shape, "allocateNpy");
  if (!HOST_IS_LITTLE_ENDIAN || dtype === "bool") {
    throw new MalformedMessageError(`allocateNpy: ${dtype} on this host needs ndarrayToNpy`);
  }
  const preamble = npyPreamble(info, shape);
  const bytes = new Uint8Array(preamble.length + count * info.itemSize);
  bytes.set(preamble, 0);
  const ctor = info.create(0).constructor as new (
    buffer: ArrayBufferLike,
    offset: number,
    length: number,
  ) => TypedArrayFor<D>;
  return { bytes, data: new ctor(bytes.buffer, preamble.length, count) };
}

/**
 * Parses `.npy` bytes into a C-order NDArray (the data is copied, never aliased).
 * Accepts format versions 1.0, 2.0 and 3.0, any header length, `fortran_order: True`
 * (converted to C order) and big-endian descrs (converted to host order).
 * Throws MalformedMessageError for anything else: bad magic, unparsable header, object or
 * structured dtypes (NumPy's `allow_pickle=False` refusal), unsupported dtypes, or a data
 * section whose length differs from what the header promises.
 */
export function npyToNdarray(bytes: Uint8Array): NDArray {
  const { dtype, shape, count, fortranOrder, bigEndian, dataStart, dataBytes: expectedBytes } = readNpyLayout(bytes);
  const info = DTYPES[dtype];

  // Copy into a fresh, aligned buffer: the input may sit at any offset inside a larger buffer.
  // (Buffer#slice would alias, so allocate and copy explicitly.)
  const raw = new Uint8Array(expectedBytes);
  raw.set(bytes.subarray(dataStart, dataStart + expectedBytes));
  if (bigEndian === HOST_IS_LITTLE_ENDIAN) reverseEachItem(raw, info.itemSize);
  if (dtype === "bool") {
    for (let i = 0; i < raw.length; i++) raw[i] = raw[i] !== 0 ? 1 : 0;
  }
  let data = info.view(raw.buffer, count);
  if (fortranOrder && shape.length > 1) {
    const reordered = info.create(count);
    fortranToC(data, reordered, shape);
    data = reordered;
  }
  return { dtype, shape: [...shape], data };
}
