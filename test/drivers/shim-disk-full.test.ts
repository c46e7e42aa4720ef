/**
 * An exec shim that cannot record its task (the task's disk is full, so task.json cannot be written) kills
 * the task before it gives up: nobody else could find, stop or account for it, and the cluster, told the
 * task's status is unknown, would run it again elsewhere while it still ran here. Found by the chaos run
 * (seed 7006). Needs root to mount a size-capped tmpfs.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shimCommandDefault } from '../../src/runtime/drivers/exec.ts';
import { launchFileName, type ShimLaunch } from '../../src/runtime/drivers/shim.ts';

const isRoot = process.getuid?.() === 0;
const base = mkdtempSync(join(tmpdir(), 'shoal-shim-full-'));
const disk = join(base, 'disk');

/** Live (not zombie) processes whose command line is exactly `args`. */
function processesRunning(args: readonly string[]): number[] {
  const wanted = `${args.join('\0')}\0`;
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8') !== wanted) continue;
      const state = readFileSync(`/proc/${name}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
      if (state !== 'Z') found.push(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

describe.skipIf(!isRoot)('an exec shim on a full disk (needs root to mount a tmpfs)', () => {
  beforeAll(() => {
    mkdirSync(disk);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', disk]);
  });
  afterAll(() => {
    execFileSync('umount', ['-l', disk]);
    rmSync(base, { recursive: true, force: true });
  });

  it('kills the task it started when it cannot record it, and says why', async () => {
    const runtimeDir = join(disk, '.shoal');
    mkdirSync(runtimeDir);
    const outside = join(base, 'task');
    mkdirSync(outside);
    // A duration no other process on the machine is sleeping for.
    const taskArgs = ['sleep', `${1000 + (process.pid % 1000)}.${Date.now() % 1000}`];
    const launch: ShimLaunch = {
      taskId: 'full0000disk',
      command: taskArgs[0] ?? 'sleep',
      args: taskArgs.slice(1),
      env: { PATH: '/usr/bin:/bin' },
      cwd: outside,
      logDir: outside,
      logRotation: { fileBytesMax: 1024 * 1024, filesMax: 2 },
      cgroup: null,
      lease: null,
    };
    const launchPath = join(runtimeDir, launchFileName);
    writeFileSync(launchPath, JSON.stringify(launch));
    // Fill what is left of the disk.
    try {
      writeFileSync(join(disk, 'filler'), Buffer.alloc(1024 * 1024));
    } catch (error) {
      expect((error as NodeJS.ErrnoException).code).toBe('ENOSPC');
    }

    const [program = process.execPath, ...programArgs] = shimCommandDefault();
    const shim = spawn(program, [...programArgs, launchPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    shim.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const exitCode = await new Promise<number | null>((resolve) => shim.once('close', resolve));

    expect(stderr).toMatch(/shoal shim: .*ENOSPC/);
    expect(exitCode).toBe(1);
    // SIGKILL to the group lands before the shim exits; the zombie is then reaped by init.
    const deadlineMs = Date.now() + 5000;
    while (processesRunning(taskArgs).length > 0 && Date.now() < deadlineMs) await sleep(50);
    expect(processesRunning(taskArgs)).toEqual([]);
  });
});
