import type { Config } from "jest";

// Three projects, by what a test file needs (`npm test` runs all three; `npm run test:unit`,
// `test:integration` and `test:e2e` one each). A file that matches neither list below is a unit test.
// e2e: child processes running dist/ (bin/*, or scripts that load it) and the Python peers.
const E2E = [
  "/test/(faults|interop)/.*\\.test\\.ts$",
  "[/.-]e2e\\.test\\.ts$",
  "/test/superlink/demo-credentials\\.test\\.ts$",
  "/test/cli/log-format\\.test\\.ts$",
  "/test/transport/(grpc-zero-copy|server-window|grpc-extensions)\\.test\\.ts$",
  "/test/browser/.*\\.test\\.ts$",
];
// integration: real servers on loopback ports, SQLite files and tools (openssl, buf) from this process.
const INTEGRATION = [
  "\\.integration\\.test\\.ts$",
  "/test/(compat|serverapp)/.*\\.test\\.ts$",
  "/test/supernode/(supernode|fleet-connection|rest-connection|fab-app|registration-abort|client-app-cli)\\.test\\.ts$",
  "/test/auth/server-auth\\.test\\.ts$",
  "/test/superlink/(cli|rest-fleet|generate-sh|metrics|metrics-status-page)\\.test\\.ts$",
  "/test/state/(sqlite|postgres)-state\\.test\\.ts$",
  "/test/proto/generated-current\\.test\\.ts$",
  "/test/transport/server-certificate-chain\\.test\\.ts$",
  "/test/server/history-plot\\.test\\.ts$",
  "/test/example/model\\.test\\.ts$",
];
const ALL = "/test/.*\\.test\\.ts$";

// Type checking is `npm run typecheck`'s job: ts-jest only transpiles (isolatedModules in tsconfig.jest.json).
const common = {
  testEnvironment: "node",
  transform: { "^.+\\.ts$": ["ts-jest", { tsconfig: "<rootDir>/tsconfig.jest.json" }] },
  rootDir: __dirname,
  // The grpc-js extensions, enabled as the daemons enable them (src/transport/grpc-extensions.ts).
  setupFiles: ["<rootDir>/test/helpers/grpc-extensions-setup.ts"],
} satisfies Config;

const config: Config = {
  projects: [
    {
      ...common,
      displayName: "unit",
      testRegex: ALL,
      testPathIgnorePatterns: ["/node_modules/", ...E2E, ...INTEGRATION],
    },
    {
      ...common,
      displayName: "integration",
      testRegex: INTEGRATION,
      testPathIgnorePatterns: ["/node_modules/", ...E2E],
    },
    { ...common, displayName: "e2e", testRegex: E2E, testPathIgnorePatterns: ["/node_modules/"] },
  ],
  // Builds dist/ if needed and generates the shared certificates once (test/helpers/fixtures.ts).
  globalSetup: "<rootDir>/test/helpers/global-setup.ts",
  globalTeardown: "<rootDir>/test/helpers/global-teardown.ts",
  testTimeout: 60_000,
  // Most test time is waiting on child processes and timers, not CPU: 4 workers on 2 cores
  // overlap the waits (jest wall 117 s -> 83 s here, the same CPU time).
  maxWorkers: 4,
  reporters: ["default", "<rootDir>/test/helpers/summary-reporter.js"],
};

export default config;
