#!/usr/bin/env node
// Post-processes ts-proto output so that decoding is as strict as Python's protobuf (upb), which
// raises DecodeError where ts-proto's decoders are lenient: a tag with field number 0, an
// END_GROUP tag with no group open (ts-proto stops reading there and ignores the rest), an
// END_GROUP that closes another field's group, invalid UTF-8 in a `string` field (ts-proto
// substitutes U+FFFD), and a submessage whose last field runs past its declared length. ts-proto
// has no option for any of these. `bytes` fields are untouched (they stay zero-copy views).
// Usage: node scripts/strict-decoding.js DIR (rewrites the .ts files under DIR in place).
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const REWRITES = [
  // BinaryReader.string(strict): a fatal TextDecoder instead of U+FFFD substitution.
  { from: "reader.string()", to: "reader.string(true)" },
  {
    from: [
      "        if ((tag & 7) === 4 || tag === 0) {",
      "          break;",
      "        }",
      "        reader.skip(tag & 7);",
    ].join("\n"),
    to: "        skipUnknownField(reader, tag);",
  },
  {
    from: "      return message;\n    } finally {",
    to: "      checkMessageEnd(reader, end);\n      return message;\n    } finally {",
  },
];

const HELPER = `
// Added by scripts/strict-decoding.js: reject what Python's protobuf rejects with DecodeError.
function skipUnknownField(reader: BinaryReader, tag: number): void {
  if (tag >>> 3 === 0) throw new globalThis.Error("invalid wire data: field number 0");
  if ((tag & 7) === 4) throw new globalThis.Error("invalid wire data: END_GROUP tag without a group");
  reader.skip(tag & 7, tag >>> 3);
}

function checkMessageEnd(reader: BinaryReader, end: number): void {
  if (reader.pos !== end) throw new globalThis.Error("invalid wire data: a field runs past the end of its message");
}
`;

function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : e.name.endsWith(".ts") ? [p] : [];
  });
}

const dir = process.argv[2];
if (!dir) {
  console.error("usage: strict-decoding.js DIR");
  process.exit(2);
}
let rewritten = 0;
for (const file of walk(dir)) {
  let text = fs.readFileSync(file, "utf8");
  if (!text.includes("reader.skip(tag & 7);")) continue;
  for (const { from, to } of REWRITES) text = text.split(from).join(to);
  if (text.includes("reader.skip(tag & 7);") || text.includes("reader.string()")) {
    console.error(`strict-decoding.js: ${file} still has a lenient decode path; did ts-proto change its output?`);
    process.exit(1);
  }
  fs.writeFileSync(file, text + HELPER);
  rewritten += 1;
}
if (rewritten === 0) {
  console.error(`strict-decoding.js: no decoders under ${dir}; did ts-proto change its output?`);
  process.exit(1);
}
