import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../shared/index.ts';
import { DiskMonitor, diskLimitVerdict, directoryUsageBytes } from './disk.ts';

const mebibyte = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'shoal-disk-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the disk limit', () => {
  it('says nothing within the request, and how far over it is past it', () => {
    expect(diskLimitVerdict(10 * mebibyte, 10 * mebibyte)).toBeNull();
    expect(diskLimitVerdict(5 * mebibyte, 0)).toBeNull();
    expect(diskLimitVerdict(12.5 * mebibyte, 10 * mebibyte)).toBe(
      'disk limit exceeded: 13 MiB used of the 10 MiB it asked for',
    );
    expect(diskLimitVerdict(1.5 * mebibyte, mebibyte)).toBe(
      'disk limit exceeded: 1.5 MiB used of the 1.0 MiB it asked for',
    );
  });

  it("counts the task's files, nested and in tmp/, not its logs, the driver's files or a link's target", async () => {
    const task = join(dir, 'task');
    mkdirSync(join(task, 'data', 'deep'), { recursive: true });
    mkdirSync(join(task, 'tmp'));
    mkdirSync(join(task, '.shoal'));
    writeFileSync(join(task, 'data', 'deep', 'a'), Buffer.alloc(2 * mebibyte, 1));
    writeFileSync(join(task, 'tmp', 'b'), Buffer.alloc(mebibyte, 1));
    writeFileSync(join(task, 'stdout.log'), Buffer.alloc(4 * mebibyte, 1));
    writeFileSync(join(task, 'stderr.log.1'), Buffer.alloc(4 * mebibyte, 1));
    writeFileSync(join(task, '.shoal', 'launch.json'), Buffer.alloc(4 * mebibyte, 1));
    writeFileSync(join(dir, 'outside'), Buffer.alloc(8 * mebibyte, 1));
    symlinkSync(join(dir, 'outside'), join(task, 'link'));
    const used = await directoryUsageBytes(task);
    expect(used).toBeGreaterThanOrEqual(3 * mebibyte);
    expect(used).toBeLessThan(3.5 * mebibyte);
  });

  it('reports a watched task once when it goes over, and forgets unwatched ones', async () => {
    const used = new Map([
      ['/a', 1],
      ['/b', 1],
    ]);
    const exceeded: string[] = [];
    const monitor = new DiskMonitor({
      logger: silentLogger,
      intervalMs: 10,
      measure: (path) => Promise.resolve(used.get(path) ?? 0),
      onExceeded: (taskId, attempt, reason) => exceeded.push(`${taskId}#${attempt}: ${reason}`),
    });
    monitor.watch({ taskId: 'a', attempt: 2, dir: '/a', limitBytes: mebibyte });
    monitor.watch({ taskId: 'b', attempt: 1, dir: '/b', limitBytes: mebibyte });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(exceeded).toEqual([]);
    monitor.unwatch('b');
    used.set('/a', 2 * mebibyte);
    used.set('/b', 2 * mebibyte);
    await new Promise((resolve) => setTimeout(resolve, 100));
    monitor.close();
    expect(exceeded).toEqual(['a#2: disk limit exceeded: 2.0 MiB used of the 1.0 MiB it asked for']);
  });
});
