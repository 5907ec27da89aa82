"use strict";
// `client:app` for `flower-client-app client:app` run from the repository root: the bundled
// example ClientApp (src/example/example-client-app.ts, built into dist/ by `npm ci` / `npm run build`).
module.exports = require("./dist/example/example-client-app.js");
