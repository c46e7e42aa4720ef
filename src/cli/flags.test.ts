import { describe, expect, it } from 'vitest';
import {
  apiAddress,
  apiCa,
  apiToken,
  parseCounts,
  parseFlags,
  parseLabelRule,
  parseMebibytes,
  parsePorts,
  splitCommandLine,
} from './flags.ts';

describe('label rules, counts, ports and sizes', () => {
  it('parses every label rule form', () => {
    expect(parseLabelRule('zone=eu', '--constraint')).toEqual({ key: 'zone', operator: '=', value: 'eu' });
    expect(parseLabelRule('zone!=eu', '--constraint')).toEqual({ key: 'zone', operator: '!=', value: 'eu' });
    expect(parseLabelRule('host=~^web-[0-9]+$', '--constraint')).toEqual({
      key: 'host',
      operator: 'regex',
      pattern: '^web-[0-9]+$',
    });
    expect(parseLabelRule('zone in eu, us', '--constraint')).toEqual({
      key: 'zone',
      operator: 'in',
      values: ['eu', 'us'],
    });
    expect(parseLabelRule('zone notin eu,us', '--constraint')).toEqual({
      key: 'zone',
      operator: 'notIn',
      values: ['eu', 'us'],
    });
  });

  it('refuses what is not a rule, a count, a port or a size, naming the flag', () => {
    expect(() => parseLabelRule('zone', '--constraint')).toThrow(/--constraint "zone" is not a label rule/);
    expect(() => parseCounts(['gpu=0'], '--device')).toThrow(/--device "gpu=0" is not KIND=COUNT/);
    expect(() => parseCounts(['gpu'], '--device')).toThrow(/KIND=COUNT/);
    expect(parseCounts(['gpu=0'], '--quota-device', true)).toEqual({ gpu: 0 });
    expect(() => parsePorts(['http=70000'], '--port')).toThrow(
      /--port "http=70000" is not NAME \(a dynamic port\), NAME=PORT/,
    );
    expect(() => parseMebibytes('1.5', '--disk')).toThrow(/--disk "1.5" must be a whole number of MiB/);
    expect(parseMebibytes('2', '--disk')).toBe(2 * 1024 * 1024);
    expect(parseMebibytes(undefined, '--disk')).toBeNull();
  });
});

describe('parseFlags', () => {
  const specs = {
    name: { type: 'string', value: 'NAME', help: 'a name' },
    env: { type: 'string', multiple: true, value: 'K=V', help: 'env' },
    detach: { type: 'boolean', short: 'd', help: 'detach' },
  } as const;

  it('gives absent flags their empty values and keeps what follows -- positional', () => {
    const { values, positionals } = parseFlags(
      ['-d', '--', 'sh', '--name', 'x'],
      specs,
      true,
      'shoal x --help',
    );
    expect(values).toEqual({ name: undefined, env: [], detach: true });
    expect(positionals).toEqual(['sh', '--name', 'x']);
  });

  it('folds parseArgs errors into one line that says where the flags are', () => {
    const error = (args: string[]): string => {
      try {
        parseFlags(args, specs, false, 'shoal x --help');
      } catch (thrown) {
        return (thrown as Error).message;
      }
      return '';
    };
    expect(error(['--bogus'])).toMatch(/^Unknown option '--bogus'.*; see shoal x --help$/);
    expect(error(['--name', '-1'])).toMatch(/Option '--name' argument is ambiguous.*use '--name=-XYZ'/);
    expect(error(['extra'])).toMatch(/Unexpected argument 'extra'/);
    for (const message of [error(['--bogus']), error(['--name', '-1']), error(['extra'])])
      expect(message).not.toContain('\n');
  });
});

describe('global flags before or after the command', () => {
  it('hands leading global flags on to the command', () => {
    expect(splitCommandLine(['--addr', '127.0.0.1:4701', 'members'])).toEqual({
      command: 'members',
      args: ['--addr', '127.0.0.1:4701'],
    });
    expect(splitCommandLine(['--addr=h:1', 'run', '--', 'sh'])).toEqual({
      command: 'run',
      args: ['--addr=h:1', '--', 'sh'],
    });
    expect(splitCommandLine(['members', '--addr', 'h:1'])).toEqual({
      command: 'members',
      args: ['--addr', 'h:1'],
    });
    expect(splitCommandLine([])).toEqual({ command: undefined, args: [] });
  });

  it('reads --help and --version before a command, and refuses other flags there', () => {
    expect(splitCommandLine(['--help'])).toEqual({ command: 'help', args: [] });
    expect(splitCommandLine(['-h', 'run'])).toEqual({ command: 'help', args: ['run'] });
    expect(splitCommandLine(['--version'])).toEqual({ command: 'version', args: [] });
    expect(() => splitCommandLine(['--json', 'ps'])).toThrow(/--json is not a global flag/);
    expect(() => splitCommandLine(['--addr'])).toThrow(/--addr needs a value \(HOST:PORT\)/);
  });

  it("takes the API address from --addr, else SHOAL_ADDR, else shoal login's, else the default", () => {
    const saved = process.env['SHOAL_ADDR'];
    try {
      delete process.env['SHOAL_ADDR'];
      expect(apiAddress({ addr: undefined })).toBe('127.0.0.1:4701');
      const config = { address: 'https://10.0.0.9:4701' };
      expect(apiAddress({ addr: undefined }, config)).toBe('https://10.0.0.9:4701');
      process.env['SHOAL_ADDR'] = '10.0.0.1:5000';
      // Off loopback an agent serves its API only over TLS.
      expect(apiAddress({ addr: undefined }, config)).toBe('https://10.0.0.1:5000');
      expect(apiAddress({ addr: '[::1]:4701' })).toBe('[::1]:4701');
      expect(apiAddress({ addr: '127.0.0.2:4701', ca: 'ca.pem' })).toBe('https://127.0.0.2:4701');
      expect(apiAddress({ addr: 'https://127.0.0.1:4701/' })).toBe('https://127.0.0.1:4701');
      expect(apiAddress({ addr: 'http://10.0.0.1:4701' })).toBe('10.0.0.1:4701');
      expect(() => apiAddress({ addr: 'nohost' })).toThrow(/--addr/);
      expect(apiToken({ token: undefined }, { ...config, token: 'shoal_stored' })).toBe(
        process.env['SHOAL_TOKEN'] ?? 'shoal_stored',
      );
      expect(apiCa({}, 'https://10.0.0.1:4701', { ...config, caPem: 'PEM' })).toBe('PEM');
      expect(apiCa({}, '127.0.0.1:4701', { ...config, caPem: 'PEM' })).toBeUndefined();
    } finally {
      if (saved === undefined) delete process.env['SHOAL_ADDR'];
      else process.env['SHOAL_ADDR'] = saved;
    }
  });
});
