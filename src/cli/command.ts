/**
 * What a command of the table is, and the one place its usage text is written: from its synopsis, its
 * description and the help line of each flag it declares, so a flag it accepts cannot be missing from its
 * help. The dispatcher (cli.ts) finds a command by name and hands it the arguments after that name.
 */
import { ShoalClient } from '../api/index.ts';
import { readCliConfig } from './config.ts';
import {
  apiAddress,
  apiCa,
  apiToken,
  asksForHelp,
  helpFlags,
  isGlobalFlag,
  parseFlags,
  type FlagSpec,
  type FlagSpecs,
  type ParsedFlags,
} from './flags.ts';

export interface Command {
  readonly name: string;
  /** One line for `shoal help`. */
  readonly summary: string;
  /** The full usage: synopsis, description, and every flag the command accepts. */
  readonly usage: string;
  /** Every flag the command accepts, --help included. */
  readonly options: FlagSpecs;
  /** Runs with the arguments after the command's name; resolves to the exit code. */
  readonly run: (args: readonly string[]) => Promise<number>;
}

export interface CommandDefinition<F extends FlagSpecs> {
  readonly name: string;
  readonly summary: string;
  /** Usage lines without the leading "Usage:", e.g. `shoal ps [flags]`. */
  readonly synopsis: readonly string[];
  /** What the command does, in a few lines. */
  readonly description: string;
  readonly options: F;
  readonly allowPositionals: boolean;
  /** Shown after the flags (value syntax, examples). */
  readonly notes?: string;
  /** `usage` is the command's own usage text (for a command line that names no action). */
  readonly run: (parsed: ParsedFlags<F>, usage: string) => Promise<number>;
}

/** A command from its definition: its flags parsed and typed before `run` sees them. */
export function defineCommand<const F extends FlagSpecs>(definition: CommandDefinition<F>): Command {
  const options: FlagSpecs = { ...definition.options, ...helpFlags };
  const usage = formatUsage(definition, options);
  return {
    name: definition.name,
    summary: definition.summary,
    usage,
    options,
    run: async (args) => {
      if (asksForHelp(args)) {
        process.stdout.write(usage);
        return 0;
      }
      const parsed = parseFlags(
        args,
        definition.options,
        definition.allowPositionals,
        `shoal ${definition.name} --help`,
      );
      return definition.run(parsed, usage);
    },
  };
}

/** A flag as the usage shows it: `-d, --detach`, `    --cpu CORES`, `    --env K=V...` (repeatable). */
export function flagLabel(name: string, spec: FlagSpec): string {
  const value =
    spec.type === 'string' ? ` ${spec.value ?? 'VALUE'}${spec.multiple === true ? '...' : ''}` : '';
  const long = `--${name}${value}`;
  return spec.short === undefined ? `    ${long}` : `-${spec.short}, ${long}`;
}

/** Flag lines: labels in one column, help beside them (below them when a label is too wide). */
export function formatFlagList(specs: readonly (readonly [string, FlagSpec])[]): string {
  const columnMax = 30;
  const labels = specs.map(([name, spec]) => flagLabel(name, spec));
  const width = Math.min(columnMax, Math.max(0, ...labels.map((label) => label.length)));
  return specs
    .map(([, spec], i) => {
      const label = labels[i] ?? '';
      return label.length > width
        ? `  ${label}\n  ${' '.repeat(width + 2)}${spec.help}\n`
        : `  ${label.padEnd(width)}  ${spec.help}\n`;
    })
    .join('');
}

function formatUsage(
  definition: Pick<CommandDefinition<FlagSpecs>, 'synopsis' | 'description' | 'notes'>,
  options: FlagSpecs,
): string {
  const entries = Object.entries(options);
  const own = entries.filter(([name]) => !isGlobalFlag(name));
  const global = entries.filter(([name]) => isGlobalFlag(name));
  const [first = '', ...more] = definition.synopsis;
  return (
    `Usage: ${first}\n` +
    more.map((line) => `       ${line}\n`).join('') +
    `\n${definition.description}\n` +
    (own.length === 0 ? '' : `\nFlags:\n${formatFlagList(own)}`) +
    `\nGlobal flags:\n${formatFlagList(global)}` +
    (definition.notes === undefined ? '' : `\n${definition.notes}\n`)
  );
}

/**
 * A client of the node --addr names (or `shoal login` stored), with its token and CA; closed once `use`
 * settles, so no kept-alive socket holds the process.
 */
export async function withClient<T>(
  values: {
    readonly addr: string | undefined;
    readonly token: string | undefined;
    readonly ca?: string | undefined;
  },
  use: (client: ShoalClient) => Promise<T>,
  timeoutMs?: number,
): Promise<T> {
  const config = readCliConfig();
  const address = apiAddress(values, config);
  const token = apiToken(values, config);
  const ca = apiCa(values, address, config);
  const client = new ShoalClient({
    address,
    ...(token === undefined ? {} : { token }),
    ...(ca === undefined ? {} : { ca }),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  });
  try {
    return await use(client);
  } finally {
    client.close();
  }
}
