// Jest reporter that ends the run with one plain line, "N passed, N failed, N skipped",
// which CI tooling reads independently of jest's own summary format. It is written when the
// process exits so it comes after jest's own summary.
"use strict";
const { writeSync } = require("node:fs");

class SummaryReporter {
  onRunComplete(_contexts, results) {
    const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
    const skipped = results.numPendingTests + results.numTodoTests;
    const line = `${results.numPassedTests} passed, ${failed} failed, ${skipped} skipped\n`;
    process.once("exit", () => writeSync(1, "\n" + line));
  }
}
module.exports = SummaryReporter;
