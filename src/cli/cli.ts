/**
 * The `shoal` command line: finds the command in the table (commands/index.ts) and runs it. `shoal agent`
 * runs a node; every other command talks to a node's HTTP API. Errors print one line,
 * `shoal COMMAND: what to fix`, and exit 2 for bad input, 1 otherwise.
 */
import { shoalVersion } from '../node/index.ts';
import { ShoalError, errorMessage } from '../shared/index.ts';
import { formatFlagList, type Command } from './command.ts';
import { commands } from './commands/index.ts';
import { leadingFlags, parseFlags, splitCommandLine } from './flags.ts';

/** Bad input (an unknown command or flag, a value out of range), so scripts can tell it from a failure. */
const exitUsage = 2;
const exitFailure = 1;

export function globalUsage(): string {
  const width = Math.max(...commands.map((command) => command.name.length), 'help'.length);
  const lines = [
    ...commands.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}\n`),
    `  ${'help'.padEnd(width)}  show this help, or a command's: shoal help COMMAND\n`,
  ];
  return (
    `shoal ${shoalVersion}: a datacenter operating system in one binary\n\n` +
    `Usage: shoal [global flags] COMMAND [flags] [ARGS...]\n\n` +
    `Commands:\n${lines.join('')}\n` +
    `Global flags (before or after the command):\n${formatFlagList(Object.entries(leadingFlags))}\n` +
    `Run shoal help COMMAND (or shoal COMMAND --help) for a command's flags.\n`
  );
}

export function findCommand(name: string): Command | undefined {
  return commands.find((command) => command.name === name);
}

/** The command a command line runs (after any leading global flags), e.g. to tell the agent from the rest. */
export function commandOf(argv: readonly string[]): string | undefined {
  try {
    return splitCommandLine(argv).command;
  } catch {
    return undefined;
  }
}

/** Runs one command line; resolves to the process's exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let line: ReturnType<typeof splitCommandLine>;
  try {
    line = splitCommandLine(argv);
  } catch (error) {
    return fail('shoal', error);
  }
  const { command: name, args } = line;
  if (name === undefined) {
    process.stdout.write(globalUsage());
    return exitUsage;
  }
  if (name === 'help') {
    try {
      return help(args);
    } catch (error) {
      return fail('shoal help', error);
    }
  }
  const command = findCommand(name);
  if (command === undefined) {
    process.stderr.write(`shoal: unknown command ${JSON.stringify(name)}; see shoal help\n`);
    return exitUsage;
  }
  try {
    return await command.run(args);
  } catch (error) {
    return fail(`shoal ${name}`, error);
  }
}

/** `shoal help [COMMAND]`; global flags given with it are ignored. */
function help(args: readonly string[]): number {
  const { positionals } = parseFlags(args, leadingFlags, true, 'shoal help');
  const [topic] = positionals;
  if (topic === undefined) {
    process.stdout.write(globalUsage());
    return 0;
  }
  const command = findCommand(topic);
  if (command === undefined) {
    process.stderr.write(`shoal help: unknown command ${JSON.stringify(topic)}; see shoal help\n`);
    return exitUsage;
  }
  process.stdout.write(command.usage);
  return 0;
}

function fail(prefix: string, error: unknown): number {
  const message = error instanceof ShoalError ? error.message : `unexpected error: ${errorMessage(error)}`;
  process.stderr.write(`${prefix}: ${message.split('\n')[0] ?? message}\n`);
  if (!(error instanceof ShoalError) && process.env['SHOAL_DEBUG'] !== undefined) console.error(error);
  return error instanceof ShoalError && error.code === 'INVALID_ARGUMENT' ? exitUsage : exitFailure;
}
