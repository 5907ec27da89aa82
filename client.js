"use strict";
// `client:app` for `flower-client-app client:app` run from the repository root: the bundled
// example ClientApp (src/example/client-app.ts, built into dist/ by `npm ci` / `npm run build`).
module.exports = require("./dist/example/client-app.js");
