import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseDevices, parseRegistryHost } from './agent.ts';

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
