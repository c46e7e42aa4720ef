/**
 * The isolation cases of the compliance suite: what a task cannot do, checked from inside a task, the same
 * for every driver that isolates (exec under isolation, docker). A driver's test file calls
 * isolationCompliance() next to driverCompliance().
 *
 * The cases say what a task must not reach — other tasks' processes and files, the agent, the host's
 * filesystem, more processes than its limit, more disk than it asked for, devices it was not given — and
 * where it may write: its directory (SHOAL_TASK_DIR) and /tmp. How each driver gets there differs (an
 * exec task sees the host read-only; a container writes into its own layer, which the host never sees), so
 * the writes are checked by their effect on the host.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { TaskDriver, TaskSpec } from '../../src/cluster/task.ts';
import {
  DiskMonitor,
  readTaskLogs,
  type Driver,
  type ExitResult,
  type StartRequest,
} from '../../src/runtime/index.ts';
import { silentLogger } from '../../src/shared/index.ts';
import {
  createTaskTracker,
  taskTestTimeoutMs,
  uniqueTaskId,
  waitUntil,
  type MakeDriver,
  type MakeSpec,
} from './compliance.ts';

export interface IsolationComplianceOptions {
  /** Stands for the agent's data directory: what tasks must not see. It holds a cluster.key. */
  hiddenDir: string;
  /** Names the suite; default the driver's name. */
  title?: string;
}

const mebibyte = 1024 * 1024;

export function isolationCompliance(
  name: TaskDriver,
  makeDriver: MakeDriver,
  makeSpec: MakeSpec,
  options: IsolationComplianceOptions,
): void {
  describe(`${options.title ?? name} isolation compliance`, { timeout: taskTestTimeoutMs }, () => {
    const tasks = createTaskTracker(makeSpec, 'isolation');
    afterEach(() => tasks.cleanup());
    const hostProbe = `/etc/shoal-isolation-probe-${name}`;
    afterAll(() => execFileSync('rm', ['-f', hostProbe]));

    /** Starts a shell script as a task, with its directory in SHOAL_TASK_DIR, and more of the spec. */
    const start = async (
      script: string,
      extra: Partial<TaskSpec> = {},
      request: Partial<StartRequest> = {},
      driver: Driver = makeDriver(),
    ): Promise<{ driver: Driver; handle: Awaited<ReturnType<Driver['start']>>; taskDir: string }> => {
      const taskDir = request.taskDir ?? (await tasks.dir());
      const handle = await driver.start({
        taskId: uniqueTaskId('isolation'),
        spec: { ...makeSpec({ command: ['sh', '-c', script], env: {} }), ...extra },
        taskDir,
        env: { SHOAL_TASK_DIR: taskDir },
        ...request,
      });
      tasks.track(driver, handle);
      return { driver, handle, taskDir };
    };

    /** Runs a shell script as a task to its end: its exit and output. */
    const run = async (
      script: string,
      extra: Partial<TaskSpec> = {},
      request: Partial<StartRequest> = {},
    ): Promise<{ result: ExitResult; stdout: string; stderr: string }> => {
      const { driver, handle, taskDir } = await start(script, extra, request);
      const result = await driver.wait(handle);
      const logs = await readTaskLogs(taskDir);
      return { result, stdout: logs.stdout.toString('utf8'), stderr: logs.stderr.toString('utf8') };
    };

    it('sees only its own processes, and cannot signal the agent', async () => {
      const { stdout } = await run(
        `ls /proc | grep -c "^[0-9]"; kill -0 ${process.pid} 2>/dev/null && echo signalled || echo refused`,
      );
      // Its shell (and the shell that is process 1 for exec), ls and grep: a handful, not the host's hundreds.
      const [count, signal] = stdout.trim().split('\n');
      expect(Number(count)).toBeLessThanOrEqual(6);
      expect(signal).toBe('refused');
    });

    it("cannot see the agent's data directory, nor another task's files", async () => {
      const other = await tasks.dir();
      writeFileSync(join(other, 'private'), 'of another task\n');
      const { stdout } = await run(
        `[ -e ${options.hiddenDir}/cluster.key ] && echo key-visible; ` +
          `[ -e ${other}/private ] && echo other-visible; echo done`,
      );
      expect(stdout).toBe('done\n');
    });

    it('writes its directory and /tmp, and nothing of the host', async () => {
      const { stdout, result } = await run(
        'echo x > "$SHOAL_TASK_DIR/own" && echo own-ok; echo y > /tmp/t && echo tmp-ok; ' +
          `touch ${hostProbe} 2>/dev/null; echo done`,
      );
      expect(result.exitCode).toBe(0);
      expect(stdout).toBe('own-ok\ntmp-ok\ndone\n');
      // An exec task's host is read-only; a container wrote into its own layer. Either way, not the host's /etc.
      expect(existsSync(hostProbe)).toBe(false);
    });

    it('runs as the user it names, by uid and gid', async () => {
      const { stdout } = await run('id -u; id -g', { user: '1234:4321' });
      expect(stdout).toBe('1234\n4321\n');
    });

    it('stops a fork bomb at its pids limit, and the node goes on', async () => {
      // One line per process started; `echo` is a builtin, so the count survives the shell failing to fork.
      const { stdout, stderr, result } = await run(
        'i=0; while [ $i -lt 500 ]; do sleep 30 & i=$((i+1)); echo $i; done',
        { pidsMax: 40 },
      );
      const forked = Number(stdout.trim().split('\n').at(-1));
      expect(result.succeeded).toBe(false);
      expect(stderr).toMatch(/fork/i);
      // 40 pids: the shells (one or two) and the sleeps they could start.
      expect(forked).toBeGreaterThan(30);
      expect(forked).toBeLessThanOrEqual(39);
      expect((await run('echo after')).stdout).toBe('after\n');
    });

    it('is stopped with the reason when it writes more than the disk it asked for', async () => {
      // What the agent does with it: measure where the task writes, stop it when over its request.
      const limitBytes = 4 * mebibyte;
      const { driver, handle, taskDir } = await start(
        'dd if=/dev/zero of=/tmp/fill bs=1048576 count=3 2>/dev/null; ' +
          'dd if=/dev/zero of=/fill bs=1048576 count=3 2>/dev/null || ' +
          'dd if=/dev/zero of="$SHOAL_TASK_DIR/fill" bs=1048576 count=3 2>/dev/null; sleep 1000',
        { diskBytes: limitBytes },
      );
      const reasons: string[] = [];
      const monitor = new DiskMonitor({
        logger: silentLogger,
        intervalMs: 200,
        onExceeded: (_taskId, _attempt, reason) => {
          reasons.push(reason);
          void driver.stop(handle, { graceMs: 0 });
        },
      });
      try {
        monitor.watch({
          taskId: handle.taskId,
          attempt: 0,
          dir: taskDir,
          otherDirs: (await driver.diskPaths?.(handle)) ?? [],
          limitBytes,
        });
        await waitUntil('the disk monitor stops the task', () => Promise.resolve(reasons.length > 0));
      } finally {
        monitor.close();
      }
      expect(reasons[0]).toMatch(/^disk limit exceeded: \d+(\.\d)? MiB used of the 4\.0 MiB it asked for$/);
      expect((await driver.wait(handle)).succeeded).toBe(false);
    });

    it('opens only the device files it holds, besides /dev/null and the like', async () => {
      const taskDir = await tasks.dir();
      // Two devices any user may open where their cgroup rule allows (tun and fuse, world-readable).
      const devices = join(taskDir, 'devices');
      mkdirSync(devices);
      execFileSync('mknod', ['-m', '666', join(devices, 'held'), 'c', '10', '200']);
      execFileSync('mknod', ['-m', '666', join(devices, 'other'), 'c', '10', '229']);
      const { stdout, result } = await run(
        `echo x > /dev/null && echo null-ok; (: < ${devices}/held) && echo held-ok; ` +
          `(: < ${devices}/other) 2>/dev/null || echo other-refused`,
        {},
        { taskDir, devices: [{ kind: 'tun', path: join(devices, 'held') }] },
      );
      expect(result.exitCode).toBe(0);
      expect(stdout).toBe('null-ok\nheld-ok\nother-refused\n');
    });
  });
}
