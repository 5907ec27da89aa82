#!/usr/bin/env node
// Post-processes ts-proto output (env=node) so that decoding a large `bytes` field returns a
// view into the received message instead of a copy: ts-proto has no option for it, and a
// 100 MB tensor was copied once more by every process it passed through. Values under
// VIEW_THRESHOLD bytes are still copied, so a small field cannot keep a large buffer alive.
// Usage: node scripts/zero-copy-bytes.js DIR (rewrites the .ts files under DIR in place).
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const CALL = "Buffer.from(reader.bytes())";
const HELPER = `
// Added by scripts/zero-copy-bytes.js: a \`bytes\` value of at least 1024 bytes is a view into the
// decoded buffer (which the caller must not reuse), a shorter one a copy.
function bytesView(bytes: Uint8Array): Buffer {
  return bytes.length < 1024 ? Buffer.from(bytes) : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
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
  console.error("usage: zero-copy-bytes.js DIR");
  process.exit(2);
}
let rewritten = 0;
for (const file of walk(dir)) {
  const text = fs.readFileSync(file, "utf8");
  if (!text.includes(CALL)) continue;
  fs.writeFileSync(file, text.split(CALL).join("bytesView(reader.bytes())") + HELPER);
  rewritten += 1;
}
if (rewritten === 0) {
  console.error(`zero-copy-bytes.js: no "${CALL}" under ${dir}; did ts-proto change its output?`);
  process.exit(1);
}
