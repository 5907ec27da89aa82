"use strict";
// `server:app` for `flower-server-app server:app` run from the repository root: the bundled
// example ServerApp (src/example/server-app.ts, built into dist/ by `npm ci` / `npm run build`).
module.exports = require("./dist/example/server-app.js");
