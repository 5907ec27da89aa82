// ESLint rule `boundaries/allowed-imports`: the dependency direction of src/ as an
// allow-list. Each folder under src/ names the src/ folders it may import from (its own folder is
// always allowed); a file in a folder the list does not name is an error, so a new folder has to
// be placed in the architecture before it can import anything. Options:
//   { root: "<abs path of src/>", allow: { "<folder>": ["<folder>", ...], ".": [...] } }
// where "." stands for the files directly in src/ (src/index.ts).
import path from "node:path";

/** The src/ folder a path belongs to ("." for files directly in src/), or undefined outside src/. */
function areaOf(root, file) {
  const rel = path.relative(root, file);
  if (rel.startsWith("..") || path.isAbsolute(rel)) return undefined;
  const parts = rel.split(path.sep);
  return parts.length === 1 ? "." : parts[0];
}

const allowedImports = {
  meta: {
    type: "problem",
    docs: { description: "Each src/ folder imports only the src/ folders its allow-list names" },
    schema: [
      {
        type: "object",
        properties: {
          root: { type: "string" },
          allow: { type: "object", additionalProperties: { type: "array", items: { type: "string" } } },
        },
        required: ["root", "allow"],
        additionalProperties: false,
      },
    ],
    messages: {
      forbidden: "src/{{from}}/ must not import src/{{to}}/ ({{spec}}); allowed: {{allowed}} (eslint.config.mjs)",
      outside: "src/ must not import files outside src/ ({{spec}})",
      unknownArea: "src/{{from}}/ is not in the module allow-list: add it in eslint.config.mjs",
    },
  },
  create(context) {
    const { root, allow } = context.options[0];
    const file = context.filename;
    const from = areaOf(root, file);
    if (from === undefined) return {};
    const allowed = allow[from];
    const check = (node, source) => {
      if (!source || typeof source.value !== "string" || !source.value.startsWith(".")) return;
      const spec = source.value;
      const to = areaOf(root, path.resolve(path.dirname(file), spec));
      if (to === from) return;
      if (to === undefined) {
        context.report({ node, messageId: "outside", data: { spec } });
      } else if (allowed === undefined) {
        context.report({ node, messageId: "unknownArea", data: { from } });
      } else if (!allowed.includes(to)) {
        const shown = allowed.length ? allowed.map((a) => `${a}/`).join(", ") : "nothing";
        context.report({ node, messageId: "forbidden", data: { from, to, spec, allowed: shown } });
      }
    };
    return {
      ImportDeclaration: (node) => check(node, node.source),
      ExportNamedDeclaration: (node) => check(node, node.source),
      ExportAllDeclaration: (node) => check(node, node.source),
      ImportExpression: (node) => check(node, node.source.type === "Literal" ? node.source : null),
      TSImportType: (node) => check(node, node.argument?.literal ?? node.source),
      TSExternalModuleReference: (node) => check(node, node.expression),
      CallExpression: (node) => {
        if (node.callee.type === "Identifier" && node.callee.name === "require") {
          const arg = node.arguments[0];
          check(node, arg?.type === "Literal" ? arg : null);
        }
      },
    };
  },
};

export default { meta: { name: "local-boundaries" }, rules: { "allowed-imports": allowedImports } };
