import type { Config } from "jest";

// Unit tests run in-process; integration and e2e tests start real servers and child processes.
const config: Config = {
  testEnvironment: "node",
  transform: { "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.json", isolatedModules: true }] },
  testMatch: ["<rootDir>/test/**/*.test.ts"],
  testTimeout: 60_000,
  maxWorkers: 2,
};

export default config;
