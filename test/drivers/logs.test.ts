import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { logsLimitBytesDefault, readTaskLogs } from '../../src/runtime/drivers/index.ts';
import { isShoalError } from '../../src/shared/index.ts';

describe('readTaskLogs', () => {
  const dirs: string[] = [];
  const makeDir = async (): Promise<string> => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-logs-test-'));
    dirs.push(dir);
    return dir;
  };
  afterEach(async () => {
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });

  it('reads missing files, and a missing directory, as empty', async () => {
    const dir = await makeDir();
    expect(await readTaskLogs(dir)).toEqual({ stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) });
    expect(await readTaskLogs(join(dir, 'not-there'), { tailBytes: 10 })).toEqual({
      stdout: Buffer.alloc(0),
      stderr: Buffer.alloc(0),
    });
  });

  it('returns the tail of each stream', async () => {
    const dir = await makeDir();
    await writeFile(join(dir, 'stdout.log'), 'first\nsecond\n');
    await writeFile(join(dir, 'stderr.log'), 'oops\n');
    const logs = await readTaskLogs(dir, { tailBytes: 7 });
    expect(logs.stdout.toString('utf8')).toBe('second\n');
    expect(logs.stderr.toString('utf8')).toBe('oops\n');
    expect((await readTaskLogs(dir, { tailBytes: 0 })).stdout.length).toBe(0);
  });

  it('caps what it returns at logsLimitBytesDefault when no tail is named', async () => {
    const dir = await makeDir();
    await writeFile(join(dir, 'stdout.log'), Buffer.alloc(logsLimitBytesDefault + 10, 'a'));
    expect((await readTaskLogs(dir)).stdout.length).toBe(logsLimitBytesDefault);
  });

  it('rejects a tail that is not a non-negative integer', async () => {
    const dir = await makeDir();
    await expect(readTaskLogs(dir, { tailBytes: -1 })).rejects.toSatisfy((error) =>
      isShoalError(error, 'INVALID_ARGUMENT'),
    );
  });
});
