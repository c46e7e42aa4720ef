import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseFlags } from '../flags.ts';
import { agentConfig, agentOptions, parseDevices, parseRegistryHost } from './agent.ts';

const dir = mkdtempSync(join(tmpdir(), 'shoal-device-flag-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const isRoot = process.getuid?.() === 0;

describe('--device', () => {
  it('takes counts', () => {
    expect(parseDevices(['gpu=2', 'fpga=0'])).toEqual({ devices: { gpu: 2, fpga: 0 } });
  });

  it.skipIf(!isRoot)('takes device files in slot order, their count the kind’s (mknod needs root)', () => {
    const first = join(dir, 'g0');
    const second = join(dir, 'g1');
    execFileSync('mknod', [first, 'c', '1', '3']);
    execFileSync('mknod', [second, 'c', '1', '5']);
    expect(parseDevices([`gpu=${first},${second}`, 'fpga=1'])).toEqual({
      devices: { fpga: 1, gpu: 2 },
      deviceFiles: { gpu: [first, second] },
    });
    expect(() => parseDevices([`gpu=${first},${first}`])).toThrow(
      '--device gpu=…: a device file is listed twice',
    );
    expect(() => parseDevices([`gpu=${first}`, 'gpu=2'])).toThrow('--device gpu is given twice');
  });

  it('refuses files that are not devices, and bad counts, saying what to give', () => {
    const plain = join(dir, 'plain');
    writeFileSync(plain, '');
    expect(() => parseDevices([`gpu=${plain}`])).toThrow(
      `--device gpu=…: "${plain}" is not a device file on this machine (give absolute paths of character or block devices)`,
    );
    expect(() => parseDevices(['gpu=/no/such/device'])).toThrow(/is not a device file on this machine/);
    expect(() => parseDevices(['gpu=two'])).toThrow(
      '--device "gpu=two" is not KIND=COUNT (a positive whole number)',
    );
  });
});

describe('--insecure-registry', () => {
  it('takes HOST or HOST:PORT and refuses a scheme or a path, in one line', () => {
    expect(parseRegistryHost('registry.lan:5000')).toBe('registry.lan:5000');
    expect(parseRegistryHost('10.0.0.7')).toBe('10.0.0.7');
    expect(parseRegistryHost('[fd00::1]:5000')).toBe('[fd00::1]:5000');
    for (const bad of ['http://registry.lan', 'registry.lan/v2', '', 'host:port'])
      expect(() => parseRegistryHost(bad)).toThrow(/give the registry as HOST or HOST:PORT/);
  });
});

describe('the task limits flags', () => {
  const config = (...args: string[]): ReturnType<typeof agentConfig> =>
    agentConfig(parseFlags(['--name', 'n1', ...args], agentOptions, false, 'shoal agent --help').values);

  it('leaves the limits to the node when absent (its memory, 10,000 ended tasks, 1 h)', () => {
    const none = config();
    expect(none.liveTasksMax).toBeUndefined();
    expect(none.terminalTasksRetainedMax).toBeUndefined();
    expect(none.terminalTaskRetentionMs).toBeUndefined();
  });

  it('takes a live-task limit, a count and an age of ended tasks, or off', () => {
    expect(
      config('--live-tasks-max', '1000000', '--ended-tasks-max', '1', '--ended-task-retention', '30m'),
    ).toMatchObject({
      liveTasksMax: 1_000_000,
      terminalTasksRetainedMax: 1,
      terminalTaskRetentionMs: 1_800_000,
    });
    expect(config('--ended-task-retention', 'off').terminalTaskRetentionMs).toBeNull();
  });

  it('refuses bad values in one line naming the flag', () => {
    expect(() => config('--live-tasks-max', '0')).toThrow(
      /^--live-tasks-max "0" must be a whole number from 1 to 100000000$/,
    );
    expect(() => config('--live-tasks-max', 'lots')).toThrow(/^--live-tasks-max "lots" must be/);
    expect(() => config('--ended-tasks-max', '2000000')).toThrow(
      /^--ended-tasks-max "2000000" must be a whole number from 1 to 1000000$/,
    );
    expect(() => config('--ended-tasks-max', '0')).toThrow(/^--ended-tasks-max "0" must be/);
    expect(() => config('--ended-task-retention', 'forever')).toThrow(
      /^--ended-task-retention "forever" must be a duration such as 30m, 1h or 7d \(at most 365d\), or off$/,
    );
  });
});
