import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readCliConfig, writeCliConfig } from './config.ts';

const root = mkdtempSync(join(tmpdir(), 'shoal-cli-config-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("the CLI's config file", () => {
  it('stores what login keeps in a 0600 file in a 0700 directory, and reads it back', () => {
    const path = join(root, 'shoal', 'config.json');
    const config = { address: 'https://10.0.0.1:4701', token: 'shoal_x', caPem: 'PEM' };
    expect(readCliConfig(path)).toBeNull();
    expect(writeCliConfig(config, path)).toBe(path);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(root, 'shoal')).mode & 0o777).toBe(0o700);
    expect(readCliConfig(path)).toEqual(config);
  });

  it('refuses a file that is not JSON or not its own, naming it', () => {
    const path = join(root, 'bad.json');
    writeFileSync(path, '{');
    expect(() => readCliConfig(path)).toThrow(/bad\.json is not JSON; run shoal login again/);
    writeFileSync(path, JSON.stringify({ address: 'x', extra: 1 }));
    expect(() => readCliConfig(path)).toThrow(/bad\.json is not shoal's: .*extra/);
  });
});
