#!/usr/bin/env node
// Lint for the module boundaries described in README.md ("Layout"): which folders may import
// which (the three daemons src/superlink, src/supernode and src/serverapp never import each other),
// that only src/cli/ touches argv, env, exit and signals, no import cycles, no focused tests.
// Exits 1 and lists every violation.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const root = path.resolve(__dirname, "..");
const src = path.join(root, "src");
const violations = [];

function walk(dir, out = []) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(p, out);
    else if (/\.ts$/.test(entry.name) && !entry.name.endsWith(".d.ts")) out.push(p);
  }
  return out;
}

const area = (file) => path.relative(src, file).split(path.sep)[0];

// area -> areas it must not import
const forbidden = {
  core: ["superlink", "supernode", "serverapp", "state", "auth", "transport", "client", "server", "cli", "example", "compat", "bench"],
  proto: ["core", "superlink", "supernode", "serverapp", "state", "auth", "transport", "client", "server", "cli"],
  transport: ["superlink", "supernode", "serverapp", "state", "client", "server", "cli"],
  state: ["superlink", "supernode", "serverapp", "transport", "auth", "client", "server", "cli"],
  auth: ["superlink", "supernode", "serverapp", "state", "client", "server", "cli"],
  superlink: ["supernode", "serverapp", "client", "server", "cli", "example"],
  supernode: ["superlink", "serverapp", "server", "cli", "example", "state"],
  serverapp: ["superlink", "supernode", "client", "cli", "example", "state"],
  client: ["superlink", "supernode", "serverapp", "server", "cli", "state"],
  server: ["superlink", "supernode", "serverapp", "client", "cli", "state"],
};
// Only the CLI owns the process.
const processApi = /\bprocess\.(argv|exit|env)\b|\bprocess\.(on|once)\(\s*["']SIG/;
const importRe = /(?:import|export)\s[^"';]*?from\s*["']([^"']+)["']|require\(\s*["']([^"']+)["']\s*\)|import\(\s*["']([^"']+)["']\s*\)/g;

const files = walk(src);
const graph = new Map();
for (const file of files) {
  const text = fs.readFileSync(file, "utf8");
  const rel = path.relative(root, file);
  const from = area(file);
  const deps = [];
  for (const m of text.matchAll(importRe)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (!spec.startsWith(".")) {
      if (from === "state" && (spec === "@grpc/grpc-js" || spec === "pino")) {
        violations.push(`${rel}: state must not import ${spec}`);
      }
      continue;
    }
    const target = path.resolve(path.dirname(file), spec);
    const to = area(target);
    if ((forbidden[from] ?? []).includes(to)) violations.push(`${rel}: ${from}/ must not import ${to}/ (${spec})`);
    const resolved = [target + ".ts", path.join(target, "index.ts")].find((p) => fs.existsSync(p));
    if (resolved) deps.push(resolved);
  }
  graph.set(file, deps);
  if (from !== "cli" && from !== "bench" && processApi.test(text.replace(/^\s*(\/\/|\*).*$/gm, ""))) {
    violations.push(`${rel}: process.argv/env/exit and signal handlers belong in src/cli/`);
  }
}

// Import cycles (type-only imports count too: keep the graph simple).
const state = new Map();
function visit(f, stack) {
  state.set(f, 1);
  stack.push(f);
  for (const d of graph.get(f) ?? []) {
    if (state.get(d) === 1) {
      const cycle = stack.slice(stack.indexOf(d)).concat(d).map((p) => path.relative(root, p));
      violations.push(`import cycle: ${cycle.join(" -> ")}`);
    } else if (!state.has(d)) visit(d, stack);
  }
  stack.pop();
  state.set(f, 2);
}
for (const f of files) if (!state.has(f)) visit(f, []);

// Focused tests silently skip the rest of the suite.
const testDir = path.join(root, "test");
if (fs.existsSync(testDir)) {
  for (const file of walk(testDir)) {
    if (/\b(describe|it|test)\.only\(/.test(fs.readFileSync(file, "utf8"))) {
      violations.push(`${path.relative(root, file)}: focused test (.only)`);
    }
  }
}

if (violations.length) {
  console.error(`check-boundaries: ${violations.length} violation(s)`);
  for (const v of violations) console.error("  " + v);
  process.exit(1);
}
console.log(`check-boundaries: ${files.length} files OK`);
