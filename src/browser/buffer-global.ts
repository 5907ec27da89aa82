/**
 * Injected by scripts/build-browser.js: every `Buffer` in the bundle refers to this, the `buffer`
 * package (a plain-JS Uint8Array subclass with Node's API; the trailing slash names the package,
 * not Node's built-in).
 */

export { Buffer } from "buffer/";
