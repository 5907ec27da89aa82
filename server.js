"use strict";
// `server:app` for `flower-server-app server:app` run from the repository root: the bundled
// example ServerApp (src/example/example-server-app.ts, built into dist/ by `npm ci` / `npm run build`).
module.exports = require("./dist/example/example-server-app.js");
