/**
 * The CLI's own file, ~/.config/shoal/config.json ($XDG_CONFIG_HOME/shoal/config.json when that is set):
 * what `shoal login` stored (a node's API address, a token, the cluster CA's certificate), so that later
 * commands on this machine need no flags. It holds a token: the file is 0600 in a 0700 directory.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import * as z from 'zod/mini';
import { describeIssues } from '../cluster/index.ts';
import { invalidArgument, writeFileAtomic } from '../shared/index.ts';
import { text } from '../shared/schema.ts';

const cliConfigSchema = z.strictObject({
  /** https://HOST:PORT of a node's API. */
  address: text(1024, 1),
  /** The token's secret. */
  token: z.exactOptional(text(1024, 1)),
  /** The CA certificate (PEM) the node's API certificate must chain to. */
  caPem: z.exactOptional(text(64 * 1024, 1)),
});
export type CliConfig = z.infer<typeof cliConfigSchema>;

export function cliConfigPath(): string {
  const base = process.env['XDG_CONFIG_HOME'];
  return join(base === undefined || base === '' ? join(homedir(), '.config') : base, 'shoal', 'config.json');
}

/** What `shoal login` stored; null when it stored nothing. INVALID_ARGUMENT when the file is not readable. */
export function readCliConfig(path = cliConfigPath()): CliConfig | null {
  if (!existsSync(path)) return null;
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw invalidArgument(`${path} is not JSON; run shoal login again, or remove it`);
  }
  const parsed = cliConfigSchema.safeParse(value);
  if (!parsed.success)
    throw invalidArgument(`${path} is not shoal's: ${describeIssues(parsed.error)}; run shoal login again`);
  return parsed.data;
}

/** Stores the config (0600, in a 0700 directory); returns its path. */
export function writeCliConfig(config: CliConfig, path = cliConfigPath()): string {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  chmodSync(dirname(path), 0o700);
  writeFileAtomic(path, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  return path;
}
