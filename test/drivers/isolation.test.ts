/**
 * Isolated exec tasks on this machine: the driver contract holds under isolation (the compliance suite
 * again), the isolation cases every isolating driver passes (isolation-compliance.ts), and what is exec's
 * own — nobody by default without capabilities, the host read-only, network none, root refused unless
 * allowed, checks in the task's namespaces. Needs root (namespaces, setuid).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { TaskSpec } from '../../src/cluster/task.ts';
import {
  createExecDriver,
  readTaskLogs,
  type Driver,
  type ExecDriverInit,
  type TaskEvent,
} from '../../src/runtime/drivers/index.ts';
import { isShoalError, silentLogger } from '../../src/shared/index.ts';
import {
  createTaskTracker,
  driverCompliance,
  expectKilled,
  taskTestTimeoutMs,
  uniqueTaskId,
  type DriverTestInit,
  type SpecInput,
} from './compliance.ts';
import { isolationCompliance } from './isolation-compliance.ts';

const isRoot = process.getuid?.() === 0;
const mebibyte = 1024 * 1024;
/** Stands for the agent's data directory: what tasks must not see. */
const agentDataDir = mkdtempSync(join(tmpdir(), 'shoal-isolation-agent-'));
writeFileSync(join(agentDataDir, 'cluster.key'), 'secret\n', { mode: 0o600 });
afterAll(() => rmSync(agentDataDir, { recursive: true, force: true }));

const makeSpec =
  (extra: Partial<TaskSpec> = {}) =>
  ({ command, env }: SpecInput): TaskSpec => ({
    name: 'isolated-test',
    driver: 'exec',
    command,
    cpuMillis: 100,
    memoryBytes: 64 * mebibyte,
    priority: 50,
    env,
    constraints: {},
    ...extra,
  });

const makeDriver = (
  init: DriverTestInit & Partial<ExecDriverInit> & { allowRootTasks?: boolean } = {},
): Driver =>
  createExecDriver({
    logger: silentLogger,
    isolation: { enabled: true, hiddenDir: agentDataDir, allowRootTasks: init.allowRootTasks ?? false },
    ...init,
  });

describe.skipIf(!isRoot)('isolated exec tasks (needs root)', () => {
  driverCompliance('exec', makeDriver, makeSpec(), { title: 'isolated exec' });
  isolationCompliance('exec', makeDriver, makeSpec(), { hiddenDir: agentDataDir, title: 'isolated exec' });

  describe('what an isolated task can do', { timeout: taskTestTimeoutMs }, () => {
    const tasks = createTaskTracker(makeSpec(), 'isolated');
    afterEach(() => tasks.cleanup());

    /** Runs a shell script in an isolated task to its end; its exit, stdout and stderr. */
    const run = async (
      script: string,
      extra: Partial<TaskSpec> = {},
      driver = makeDriver(),
    ): Promise<{ exitCode: number | null; stdout: string; stderr: string; events: TaskEvent[] }> => {
      const taskDir = await tasks.dir();
      const events: TaskEvent[] = [];
      const handle = await driver.start({
        taskId: uniqueTaskId('isolated'),
        spec: makeSpec(extra)({ command: ['sh', '-c', script], env: {} }),
        taskDir,
        onEvent: (event) => events.push(event),
      });
      tasks.track(driver, handle);
      const result = await driver.wait(handle);
      const logs = await readTaskLogs(taskDir);
      return {
        exitCode: result.exitCode,
        stdout: logs.stdout.toString('utf8'),
        stderr: logs.stderr.toString('utf8'),
        events,
      };
    };

    it('runs as nobody by default, with no capabilities and no_new_privs, and says so', async () => {
      const { stdout, events } = await run(
        'id -u; id -g; grep -E "^(CapEff|CapBnd|NoNewPrivs):" /proc/self/status',
      );
      expect(stdout.split('\n')).toEqual([
        '65534',
        '65534',
        'CapEff:\t0000000000000000',
        'CapBnd:\t0000000000000000',
        'NoNewPrivs:\t1',
        '',
      ]);
      expect(events.map((event) => event.message)).toContainEqual(
        expect.stringMatching(/^runs as nobody \(uid 65534, gid 65534\) with no capabilities, in pid, mount/),
      );
    });

    it('writes only its directory and /tmp (its own tmp/): the host is read-only', async () => {
      const { stdout } = await run(
        'echo x > own && echo own-ok; echo y > /tmp/t && echo tmp-ok; ' +
          'touch /etc/shoal-isolation-probe 2>/dev/null && echo etc-written; ' +
          'touch /usr/shoal-isolation-probe 2>/dev/null && echo usr-written; ' +
          'echo z > /dev/shm/s && echo shm-ok; echo done',
      );
      expect(stdout).toBe('own-ok\ntmp-ok\nshm-ok\ndone\n');
      await expect(readFile('/etc/shoal-isolation-probe')).rejects.toThrow();
    });

    it('keeps the tmp/ it wrote in its directory', async () => {
      const taskDir = await tasks.dir();
      const driver = makeDriver();
      const handle = await driver.start({
        taskId: uniqueTaskId('isolated'),
        spec: makeSpec()({ command: ['sh', '-c', 'echo kept > /tmp/file'], env: {} }),
        taskDir,
      });
      tasks.track(driver, handle);
      expect((await driver.wait(handle)).exitCode).toBe(0);
      expect(await readFile(join(taskDir, 'tmp', 'file'), 'utf8')).toBe('kept\n');
    });

    it('has only loopback with network none', async () => {
      const { stdout } = await run('tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " "', { network: 'none' });
      expect(stdout).toBe('lo\n');
    });

    it('stops promptly on SIGTERM though the task (behind process 1) sets no handler', async () => {
      const driver = makeDriver();
      const { handle } = await tasks.start(driver, ['sleep', '1000']);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const startedMs = Date.now();
      await driver.stop(handle, { graceMs: 20_000 });
      expect(Date.now() - startedMs).toBeLessThan(5000);
      const result = await driver.wait(handle);
      expectKilled(result);
      expect(result.signal).toBe('SIGTERM');
    });

    it("refuses root unless the agent allows it; allowed, root keeps Docker's default capabilities less NET_RAW", async () => {
      await expect(run('id -u', { user: 'root' })).rejects.toSatisfy(
        (error) =>
          isShoalError(error, 'PERMISSION_DENIED') &&
          /refuses root tasks; .* --allow-root-tasks/.test(error.message),
      );
      const { stdout, events } = await run(
        'id -u; grep "^CapBnd:" /proc/self/status',
        { user: 'root' },
        makeDriver({ allowRootTasks: true }),
      );
      // chown dac_override fowner fsetid kill setgid setuid setpcap net_bind_service sys_chroot mknod
      // audit_write setfcap: bits 0, 1, 3-8, 10, 18, 27, 29, 31 — without net_raw (13).
      expect(stdout).toBe('0\nCapBnd:\t00000000a80405fb\n');
      expect(events.map((event) => event.message)).toContainEqual(expect.stringMatching(/^runs as root/));
    });

    it('runs its exec health checks in its namespaces, as its user', async () => {
      const driver = makeDriver();
      const { handle, taskDir } = await tasks.start(driver, [
        'sh',
        '-c',
        'echo ready > /tmp/ready; sleep 1000',
      ]);
      let result = { exitCode: null as number | null, output: '', timedOut: false };
      // The check sees the task's /tmp (its tmp/), not the host's, once the task has written there.
      for (let i = 0; i < 50 && !result.output.startsWith('ready'); i++) {
        result = await (driver.execCheck ?? (() => Promise.reject(new Error('no execCheck'))))(handle, {
          command: ['sh', '-c', 'cat /tmp/ready && id -u && ls /proc | grep -c "^[0-9]"'],
          env: {},
          cwd: taskDir,
          timeoutMs: 10_000,
        });
        if (!result.output.startsWith('ready')) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const [ready, uid, processes] = result.output.trim().split('\n');
      expect(result.exitCode).toBe(0);
      expect([ready, uid]).toEqual(['ready', '65534']);
      expect(Number(processes)).toBeLessThanOrEqual(8);
    });

    it("runs with the task's own PATH, which need not hold the host's tools", async () => {
      const taskDir = await tasks.dir();
      const driver = makeDriver();
      const handle = await driver.start({
        taskId: uniqueTaskId('isolated'),
        spec: makeSpec()({ command: ['/bin/sh', '-c', 'echo "$PATH"'], env: { PATH: '/nonexistent' } }),
        taskDir,
      });
      tasks.track(driver, handle);
      expect((await driver.wait(handle)).exitCode).toBe(0);
      expect((await readTaskLogs(taskDir)).stdout.toString('utf8')).toBe('/nonexistent\n');
    });

    it('refuses a user this node does not know, by name', async () => {
      await expect(run('true', { user: 'no-such-user-here' })).rejects.toSatisfy(
        (error) =>
          isShoalError(error, 'INVALID_ARGUMENT') &&
          /no user no-such-user-here on this node/.test(error.message),
      );
    });
  });
});
