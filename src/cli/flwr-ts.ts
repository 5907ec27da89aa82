/**
 * `flwr-ts`: the developer's command (the daemons have their own). `flwr-ts new NAME` creates
 * a runnable TypeScript app folder, like Flower's `flwr new`. Exit codes: 0 done, 2 bad
 * arguments or an existing folder.
 */
import { relative } from "node:path";
import { Command } from "commander";
import { type CliIo, parseOrExitCode, packageVersion, routeOutput, runMain } from "./common";
import { EXIT_CONFIG, EXIT_OK, exitCodeFor } from "./run-daemon";
import { createApp } from "./new-app";
import { errorMessage } from "../core/errors";

const NAME = "flwr-ts";

function buildCommand(io: CliIo, done: (code: number) => void): Command {
  const program = new Command(NAME)
    .description("flwr-ts developer tools.")
    .exitOverride()
    .showHelpAfterError(false)
    .version(packageVersion(), "-V, --version", "Print the flwr-ts version and exit.");
  program
    .command("new")
    .description(
      "Create a new app folder: a typed ClientApp and ServerApp in TypeScript, package.json, tsconfig.json, README.",
    )
    .argument("<name>", "The app's name: its folder (created in --dir) and package name.")
    .option("--dir <parent>", "Where the app folder is created.", ".")
    .action((name: string, opts: { dir: string }) => {
      const write = io.writeOut ?? ((s: string) => process.stdout.write(s));
      const fail = io.writeErr ?? ((s: string) => process.stderr.write(s));
      try {
        const created = createApp({ name, parentDir: opts.dir, flwrVersion: packageVersion() });
        const shown = relative(process.cwd(), created.dir) || ".";
        write(
          `Created ${shown}/ (${created.files.join(", ")}).\n\n` +
            `Next:\n  cd ${shown}\n  npm install\n  npm run typecheck\n\nThen run it as its README.md says.\n`,
        );
        done(EXIT_OK);
      } catch (err) {
        fail(`${NAME} new: ${errorMessage(err)}\n`);
        done(exitCodeFor(err));
      }
    });
  routeOutput(program, io);
  return program;
}

/** Runs the command line; `argv` is process.argv-shaped (node, script, ...args). */
export function main(argv: string[], io: CliIo = {}): Promise<number> {
  let code: number = EXIT_CONFIG;
  const program = buildCommand(io, (c) => (code = c));
  if (argv.length <= 2) {
    program.outputHelp({ error: true });
    return Promise.resolve(EXIT_CONFIG);
  }
  const parseExit = parseOrExitCode(program, argv);
  return Promise.resolve(parseExit ?? code);
}

export function run(): void {
  runMain(NAME, (argv) => main(argv));
}
