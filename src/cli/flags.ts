/**
 * Every flag of the CLI is parsed here: the declaration of a command's flags (with the help line its usage
 * shows), the parser (node:util parseArgs, with its errors folded into one line), the global flags that
 * may come before or after the command, and the value parsers (numbers, sizes, pairs, counts, ports,
 * label rules). Pure: strings in, values out, or a one-line INVALID_ARGUMENT error naming the flag.
 */
import { parseArgs } from 'node:util';
import { portMax } from '../allocator/index.ts';
import { cpuMillisMax, type LabelConstraintSpec } from '../cluster/index.ts';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { httpsAddressPrefix, unixAddressPrefix } from '../api/index.ts';
import {
  apiDefault,
  apiSocketFileName,
  certificateFingerprint,
  formatHostPort,
  isLoopbackHost,
  parseHostPort,
} from '../node/index.ts';
import { errorMessage, invalidArgument, mebibyte } from '../shared/index.ts';
import { cliConfigPath, type CliConfig } from './config.ts';

/** One flag: how parseArgs reads it and how the usage text shows it. */
export interface FlagSpec {
  readonly type: 'string' | 'boolean';
  /** A one-letter alias, e.g. `d` for `-d`. */
  readonly short?: string;
  /** May be given more than once; the values come back as a list. */
  readonly multiple?: boolean;
  /** The value's placeholder in the usage text (CORES, KEY=VALUE); strings only. */
  readonly value?: string;
  /** One line for the usage text. */
  readonly help: string;
}

export type FlagSpecs = Readonly<Record<string, FlagSpec>>;

/** A boolean is false when absent; a repeatable flag is a list, empty when absent. */
type FlagValue<S extends FlagSpec> = S['type'] extends 'boolean'
  ? boolean
  : S extends { readonly multiple: true }
    ? string[]
    : string | undefined;

export type FlagValues<F extends FlagSpecs> = { readonly [K in keyof F]: FlagValue<F[K]> };

export interface ParsedFlags<F extends FlagSpecs> {
  readonly values: FlagValues<F>;
  readonly positionals: string[];
}

/** Every command takes these. */
export const helpFlags = {
  help: { type: 'boolean', short: 'h', help: 'show this help' },
} as const satisfies FlagSpecs;

/**
 * What every command that talks to a node's API takes, before or after the command's name
 * (`shoal --addr H:P ps` and `shoal ps --addr H:P`). Credentials (a token, a CA) belong here too.
 */
export const apiFlags = {
  addr: {
    type: 'string',
    value: 'HOST:PORT',
    help: `the node's API: [https://]HOST:PORT (https off loopback), or unix:PATH for its socket (default: $SHOAL_ADDR, else shoal login's, else ~/.shoal/${apiSocketFileName} if there, else ${apiDefault})`,
  },
  token: {
    type: 'string',
    value: 'SECRET',
    help: "the API token (default: $SHOAL_TOKEN, else shoal login's); the node's Unix socket needs none",
  },
  ca: {
    type: 'string',
    value: 'FILE',
    help: "the CA certificate (PEM) the node's API certificate must chain to; implies https (default: shoal login's)",
  },
} as const satisfies FlagSpecs;

/** The flags `shoal` itself takes before a command's name. */
export const leadingFlags = {
  ...apiFlags,
  ...helpFlags,
  version: { type: 'boolean', help: 'print the version' },
} as const satisfies FlagSpecs;

/** Whether a flag's name is that of a global flag (shown apart in the usage text). */
export function isGlobalFlag(name: string): boolean {
  return name in apiFlags || name in helpFlags;
}

/**
 * Parses a command's arguments. `hint` names where the user finds the flags (`shoal run --help`). Options
 * may come anywhere before `--`; what follows it is positional.
 */
export function parseFlags<const F extends FlagSpecs>(
  args: readonly string[],
  specs: F,
  allowPositionals: boolean,
  hint: string,
): ParsedFlags<F> {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [name, spec] of Object.entries(specs)) {
    options[name] = {
      type: spec.type,
      ...(spec.short === undefined ? {} : { short: spec.short }),
      ...(spec.multiple === true ? { multiple: true } : {}),
    };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: [...args], options, allowPositionals, strict: true });
  } catch (error) {
    // parseArgs explains over several lines; the CLI promises one.
    const message = errorMessage(error)
      .split('\n')
      .map((line) => line.trim().replace(/\.$/, ''))
      .filter((line) => line !== '' && !line.startsWith('To specify a positional'))
      .join('; ');
    throw invalidArgument(`${message}; see ${hint}`);
  }
  const values: Record<string, string | string[] | boolean | undefined> = {};
  for (const [name, spec] of Object.entries(specs)) {
    const value = parsed.values[name];
    if (spec.type === 'boolean') values[name] = value === true;
    else if (spec.multiple === true) values[name] = Array.isArray(value) ? value.map(String) : [];
    else values[name] = typeof value === 'string' ? value : undefined;
  }
  // The loop above gave every declared flag the shape FlagValues promises.
  return { values: values as FlagValues<F>, positionals: parsed.positionals };
}

/** Whether the arguments ask for help (-h or --help before any `--`). */
export function asksForHelp(args: readonly string[]): boolean {
  const end = args.indexOf('--');
  return (end === -1 ? args : args.slice(0, end)).some((arg) => arg === '-h' || arg === '--help');
}

/**
 * Splits `shoal [GLOBAL FLAGS] COMMAND ARGS…`: the leading global flags are handed on with the command's
 * arguments (so the command parses them as if they came after its name), and `-h`/`--help`/`--version`
 * before a command come back as `help`/`version`.
 */
export function splitCommandLine(argv: readonly string[]): {
  readonly command: string | undefined;
  readonly args: string[];
} {
  const leading: string[] = [];
  let at = 0;
  while (at < argv.length) {
    const arg = argv[at] ?? '';
    if (!arg.startsWith('-') || arg === '-') break;
    if (arg === '--') {
      at += 1;
      break;
    }
    if (arg === '-h' || arg === '--help') return { command: 'help', args: argv.slice(at + 1) };
    if (arg === '--version') return { command: 'version', args: [] };
    const name = arg.startsWith('--') ? (arg.slice(2).split('=')[0] ?? '') : '';
    const globals: FlagSpecs = apiFlags;
    const spec = Object.hasOwn(globals, name) ? globals[name] : undefined;
    if (spec === undefined)
      throw invalidArgument(`${arg} is not a global flag; give a command first (see shoal help)`);
    leading.push(arg);
    if (spec.type === 'string' && !arg.includes('=')) {
      const value = argv[at + 1];
      if (value === undefined) throw invalidArgument(`${arg} needs a value (${spec.value ?? 'VALUE'})`);
      leading.push(value);
      at += 1;
    }
    at += 1;
  }
  const command = argv[at];
  return { command, args: [...leading, ...argv.slice(at + 1)] };
}

/**
 * The API address: --addr, else $SHOAL_ADDR, else the one `shoal login` stored, else the Unix socket of an
 * agent run with the default data dir (~/.shoal) when it is there (no token needed), else the default TCP
 * address. A HOST:PORT is https:// when given so, with --ca, or off loopback (where an agent serves its API
 * only over TLS); plain HTTP otherwise.
 */
export function apiAddress(
  values: { readonly addr: string | undefined; readonly ca?: string | undefined },
  config: CliConfig | null = null,
): string {
  const environment = process.env['SHOAL_ADDR'];
  const source =
    values.addr !== undefined
      ? '--addr'
      : environment !== undefined
        ? 'SHOAL_ADDR'
        : config !== null
          ? cliConfigPath()
          : 'the default address';
  const address = values.addr ?? environment ?? config?.address ?? localSocketAddress() ?? apiDefault;
  if (address.startsWith(unixAddressPrefix)) {
    if (address.length === unixAddressPrefix.length) throw invalidArgument(`${source} unix: needs a path`);
    return address;
  }
  const scheme = /^(https?):\/\//i.exec(address);
  const hostPort = parseHostPort(address.slice(scheme?.[0].length ?? 0).replace(/\/+$/, ''), source);
  const secure =
    scheme === null
      ? values.ca !== undefined || !isLoopbackHost(hostPort.host)
      : scheme[1]?.toLowerCase() === 'https';
  return `${secure ? httpsAddressPrefix : ''}${formatHostPort(hostPort)}`;
}

function localSocketAddress(): string | null {
  const path = join(homedir(), '.shoal', apiSocketFileName);
  return existsSync(path) ? `${unixAddressPrefix}${path}` : null;
}

/** The API token: --token, else $SHOAL_TOKEN, else the one `shoal login` stored; none (the Unix socket needs none). */
export function apiToken(
  values: { readonly token: string | undefined },
  config: CliConfig | null = null,
): string | undefined {
  const token = values.token ?? process.env['SHOAL_TOKEN'] ?? config?.token;
  return token === undefined || token.trim() === '' ? undefined : token.trim();
}

/**
 * The CA an https address's certificate must chain to: --ca FILE, else the one `shoal login` stored; none
 * (the system's CAs) when neither. Plain addresses take none.
 */
export function apiCa(
  values: { readonly ca?: string | undefined },
  address: string,
  config: CliConfig | null = null,
): string | undefined {
  if (!address.startsWith(httpsAddressPrefix)) return undefined;
  return values.ca === undefined ? config?.caPem : readCertificateFile(values.ca, '--ca');
}

/** A PEM certificate file; INVALID_ARGUMENT naming the flag when it is unreadable or holds none. */
export function readCertificateFile(file: string, flag: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (error) {
    throw invalidArgument(`cannot read ${flag} ${file}: ${errorMessage(error)}`);
  }
  try {
    certificateFingerprint(pem);
  } catch {
    throw invalidArgument(`${flag} ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  }
  return pem;
}

/**
 * A number, or null when the flag is absent. `check` says whether it is allowed, `what` what is (as the
 * end of "--flag "x" must be …").
 */
export function parseNumber(
  value: string | undefined,
  flag: string,
  check: (n: number) => boolean,
  what: string,
): number | null {
  if (value === undefined) return null;
  const number = Number(value);
  if (value.trim() === '' || !Number.isFinite(number) || !check(number)) {
    throw invalidArgument(`${flag} ${JSON.stringify(value)} must be ${what}`);
  }
  return number;
}

/** A whole number in [min, max], or null when the flag is absent. */
export function parseWhole(value: string | undefined, flag: string, min: number, max: number): number | null {
  const what =
    max === Number.MAX_SAFE_INTEGER
      ? min === 0
        ? 'a whole number'
        : `a whole number, at least ${min}`
      : `a whole number from ${min} to ${max}`;
  return parseNumber(value, flag, (n) => Number.isSafeInteger(n) && n >= min && n <= max, what);
}

/** Cores (`0.5`, `2`) as millicores, or null when the flag is absent. */
export function parseCores(value: string | undefined, flag: string): number | null {
  const cores = parseNumber(
    value,
    flag,
    (n) => n > 0 && n <= cpuMillisMax / 1000,
    'a positive number of cores (e.g. 0.5)',
  );
  return cores === null ? null : Math.round(cores * 1000);
}

/** A size in MiB (whole, not negative) as bytes, or null when the flag is absent. */
export function parseMebibytes(value: string | undefined, flag: string): number | null {
  if (value === undefined) return null;
  const number = Number(value);
  if (value.trim() === '' || !Number.isSafeInteger(number) || number < 0) {
    throw invalidArgument(`${flag} ${JSON.stringify(value)} must be a whole number of MiB`);
  }
  return number * mebibyte;
}

/** One of a few words, or null when the flag is absent. */
export function parseChoice<const C extends string>(
  value: string | undefined,
  flag: string,
  choices: readonly C[],
): C | null {
  if (value === undefined) return null;
  const choice = choices.find((c) => c === value);
  if (choice === undefined) {
    const listed = `${choices.slice(0, -1).join(', ')} or ${choices.at(-1) ?? ''}`;
    throw invalidArgument(`${flag} ${JSON.stringify(value)} is unknown; use ${listed}`);
  }
  return choice;
}

/** `KEY=VALUE` pairs (env, labels) into a record. */
export function parsePairs(pairs: readonly string[], flag: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    if (at <= 0) throw invalidArgument(`${flag} ${JSON.stringify(pair)} is not KEY=VALUE`);
    result[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return result;
}

/** `KIND=COUNT` pairs (devices) into counts; every count a positive whole number, or 0 if allowed. */
export function parseCounts(
  pairs: readonly string[],
  flag: string,
  allowZero = false,
): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const pair of pairs) {
    const match = /^([A-Za-z0-9][A-Za-z0-9._-]*)=(\d+)$/.exec(pair);
    const count = Number(match?.[2]);
    if (!match || !Number.isSafeInteger(count) || (count === 0 && !allowZero)) {
      throw invalidArgument(`${flag} ${JSON.stringify(pair)} is not KIND=COUNT (a positive whole number)`);
    }
    counts[match[1] ?? ''] = count;
  }
  return counts;
}

/** `NAME=PORT` pairs into named host ports. */
export function parsePorts(
  pairs: readonly string[],
  flag: string,
): {
  ports?: Record<string, number>;
  dynamicPorts?: string[];
  portTargets?: Record<string, number>;
} {
  const ports: Record<string, number> = {};
  const dynamicPorts: string[] = [];
  const portTargets: Record<string, number> = {};
  const valid = (text: string | undefined): boolean => {
    const port = Number(text);
    return text === undefined || (Number.isInteger(port) && port >= 1 && port <= portMax);
  };
  for (const pair of pairs) {
    const match = /^([A-Za-z0-9][A-Za-z0-9._-]*)(?:=(\d+))?(?::(\d+))?$/.exec(pair);
    const [, name = '', hostPort, target] = match ?? [];
    if (!match || !valid(hostPort) || !valid(target))
      throw invalidArgument(
        `${flag} ${JSON.stringify(pair)} is not NAME (a dynamic port), NAME=PORT (a static one) or either with :TO (the container's port), ports from 1 to ${portMax}`,
      );
    if (name in ports || dynamicPorts.includes(name)) throw invalidArgument(`${flag} ${name} is given twice`);
    if (hostPort === undefined) dynamicPorts.push(name);
    else ports[name] = Number(hostPort);
    if (target !== undefined) portTargets[name] = Number(target);
  }
  return {
    ...(Object.keys(ports).length === 0 ? {} : { ports }),
    ...(dynamicPorts.length === 0 ? {} : { dynamicPorts }),
    ...(Object.keys(portTargets).length === 0 ? {} : { portTargets }),
  };
}

/** What a label rule looks like, for usage texts and errors. */
export const labelRuleForms = `KEY=VALUE, KEY!=VALUE, KEY=~REGEX, "KEY in A,B" or "KEY notin A,B"`;

/**
 * One label rule:
 *   KEY=VALUE   KEY!=VALUE   KEY=~REGEX   "KEY in A,B,C"   "KEY notin A,B,C"
 */
export function parseLabelRule(text: string, flag: string): LabelConstraintSpec {
  const set = /^\s*([^\s=!~]+)\s+(in|notin)\s+(\S.*)$/i.exec(text);
  if (set) {
    const [, key = '', operator = '', list = ''] = set;
    const values = list
      .split(',')
      .map((value) => value.trim())
      .filter((value) => value !== '');
    if (values.length === 0) throw invalidArgument(`${flag} ${JSON.stringify(text)} lists no values`);
    return operator.toLowerCase() === 'in'
      ? { key, operator: 'in', values }
      : { key, operator: 'notIn', values };
  }
  const regex = /^([^=!~\s]+)=~(.+)$/.exec(text);
  if (regex) return { key: regex[1] ?? '', operator: 'regex', pattern: regex[2] ?? '' };
  const notEqual = /^([^=!~\s]+)!=(.*)$/.exec(text);
  if (notEqual) return { key: notEqual[1] ?? '', operator: '!=', value: notEqual[2] ?? '' };
  const equal = /^([^=!~\s]+)=(.*)$/.exec(text);
  if (equal) return { key: equal[1] ?? '', operator: '=', value: equal[2] ?? '' };
  throw invalidArgument(`${flag} ${JSON.stringify(text)} is not a label rule; use ${labelRuleForms}`);
}

const durationUnitsMs: Readonly<Record<string, number>> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** A duration such as 90s, 30m, 12h or 7d, in ms; null when the flag is absent. */
export function parseDuration(value: string | undefined, flag: string, maxMs: number): number | null {
  if (value === undefined) return null;
  const match = /^(\d+(?:\.\d+)?)([smhd])$/.exec(value.trim());
  const unitMs = durationUnitsMs[match?.[2] ?? ''];
  const ms = match && unitMs !== undefined ? Math.round(Number(match[1]) * unitMs) : NaN;
  if (!Number.isFinite(ms) || ms <= 0 || ms > maxMs) {
    throw invalidArgument(
      `${flag} ${JSON.stringify(value)} must be a duration such as 90s, 30m, 12h or 7d, at most ${Math.floor(maxMs / 86_400_000)}d`,
    );
  }
  return ms;
}
