import type { Config } from "jest";

// Unit tests run in-process; integration and e2e tests start real servers and child processes
// on ephemeral ports. `npm test` builds dist/ first so e2e tests can spawn bin/*.
const config: Config = {
  testEnvironment: "node",
  transform: { "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.jest.json" }] },
  testMatch: ["<rootDir>/test/**/*.test.ts"],
  // The grpc-js extensions, enabled as the daemons enable them (src/transport/grpc-extensions.ts).
  setupFiles: ["<rootDir>/test/helpers/grpc-extensions-setup.ts"],
  testTimeout: 60_000,
  maxWorkers: 2,
  reporters: ["default", "<rootDir>/test/helpers/summary-reporter.js"],
};

export default config;
