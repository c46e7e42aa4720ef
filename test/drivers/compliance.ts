/**
 * One compliance suite every task driver passes (after Nomad's plugins/drivers/testutils). A driver's test file
 * calls driverCompliance() with a factory and a way to turn a command into a TaskSpec for that driver.
 *
 * Commands are plain POSIX sh and busybox: `sh -c …`, `sleep`, `true`. Timing assertions are upper bounds with
 * several seconds of slack, since CI is a loaded 2-core machine.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import type { TaskDriver, TaskSpec } from '../../src/cluster/task.ts';
import {
  readTaskLogs,
  type Driver,
  type ExitResult,
  type StartRequest,
  type TaskHandle,
} from '../../src/runtime/drivers/index.ts';

export interface SpecInput {
  command: string[];
  env: Record<string, string>;
}

export type MakeSpec = (input: SpecInput) => TaskSpec;

/** Slack on top of a grace period before a stop counts as too slow. */
export const stopSlackMs = 10_000;
/** Timeout for tests that start and stop real tasks. */
export const taskTestTimeoutMs = 60_000;
const graceMs = 2000;

/** A fresh, private directory for one task; removed by cleanup(). */
async function makeTaskDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'shoal-driver-test-'));
}

export function uniqueTaskId(prefix: string): string {
  return `${prefix}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Polls `condition` every 50 ms until it holds; throws `what` after timeoutMs. */
export async function waitUntil(
  what: string,
  condition: () => Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (Date.now() < deadlineMs) {
    if (await condition()) return;
    await sleep(50);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms`);
}

/** Polls the task's stdout.log until it holds `text`: how a test knows a script reached a point. */
export async function waitForStdout(taskDir: string, text: string, timeoutMs = 20_000): Promise<void> {
  await waitUntil(
    `stdout of ${taskDir} shows ${JSON.stringify(text)}`,
    async () => (await readTaskLogs(taskDir)).stdout.toString('utf8').includes(text),
    timeoutMs,
  );
}

const execFileAsync = promisify(execFile);
const dyingAgentPath = fileURLToPath(new URL('./fixtures/start-task.ts', import.meta.url));

/** Starts a task from a separate Node process that exits right after: an agent that died. Returns its handle. */
export async function startInDyingAgent(
  driver: TaskDriver,
  socketPath: string | undefined,
  request: StartRequest,
): Promise<TaskHandle> {
  const input = JSON.stringify({ driver, ...(socketPath === undefined ? {} : { socketPath }), request });
  const { stdout } = await execFileAsync(
    process.execPath,
    ['--experimental-strip-types', '--disable-warning=ExperimentalWarning', dyingAgentPath, input],
    { timeout: 30_000 },
  );
  return JSON.parse(stdout) as TaskHandle;
}

/** A task ended by a signal: exec reports the signal, docker 128+n (named when shoal stopped it). */
export function expectKilled(result: ExitResult): void {
  expect(result.succeeded).toBe(false);
  expect(result.signal !== null || (result.exitCode ?? 0) > 128, JSON.stringify(result)).toBe(true);
}

/** What tests start, so afterEach can stop and destroy it whatever happened. */
export interface TaskTracker {
  /** A fresh task directory, removed at cleanup. */
  dir(): Promise<string>;
  start(
    driver: Driver,
    command: string[],
    env?: Record<string, string>,
  ): Promise<{ handle: TaskHandle; taskDir: string }>;
  track(driver: Driver, handle: TaskHandle): void;
  cleanup(): Promise<void>;
}

export function createTaskTracker(makeSpec: MakeSpec, prefix: string): TaskTracker {
  const started: { driver: Driver; handle: TaskHandle }[] = [];
  const dirs: string[] = [];
  const dir = async (): Promise<string> => {
    const taskDir = await makeTaskDir();
    dirs.push(taskDir);
    return taskDir;
  };
  return {
    dir,
    async start(driver, command, env = {}) {
      const taskDir = await dir();
      const handle = await driver.start({
        taskId: uniqueTaskId(prefix),
        spec: makeSpec({ command, env }),
        taskDir,
      });
      started.push({ driver, handle });
      return { handle, taskDir };
    },
    track(driver, handle) {
      started.push({ driver, handle });
    },
    async cleanup() {
      for (const { driver, handle } of started.splice(0)) {
        await driver.stop(handle, { graceMs: 0 }).catch(() => undefined);
        await driver.destroy(handle).catch(() => undefined);
      }
      for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface ComplianceOptions {
  /** For the docker driver: the engine socket a separate agent process must use too. */
  socketPath?: string;
}

export function driverCompliance(
  name: TaskDriver,
  makeDriver: () => Driver,
  makeSpec: MakeSpec,
  options: ComplianceOptions = {},
): void {
  describe(`${name} driver compliance`, { timeout: taskTestTimeoutMs }, () => {
    const tasks = createTaskTracker(makeSpec, 'compliance');
    afterEach(() => tasks.cleanup());

    it('is healthy', async () => {
      const health = await makeDriver().health();
      expect(health.healthy, health.detail).toBe(true);
    });

    it('reports a task that exits 0 as succeeded', async () => {
      const driver = makeDriver();
      const { handle } = await tasks.start(driver, ['true']);
      expect(handle.driver).toBe(name);
      expect(await driver.wait(handle)).toEqual({
        exitCode: 0,
        signal: null,
        oomKilled: false,
        reason: 'exit code 0',
        succeeded: true,
      });
    });

    it('reports the exit code and captures stdout and stderr apart', async () => {
      const driver = makeDriver();
      const { handle, taskDir } = await tasks.start(driver, ['sh', '-c', 'echo out; echo err >&2; exit 3']);
      const result = await driver.wait(handle);
      expect(result).toEqual({
        exitCode: 3,
        signal: null,
        oomKilled: false,
        reason: 'exit code 3',
        succeeded: false,
      });
      const logs = await readTaskLogs(taskDir);
      expect(logs.stdout.toString('utf8')).toBe('out\n');
      expect(logs.stderr.toString('utf8')).toBe('err\n');
    });

    it('still answers wait() for a task that exited before wait() was called', async () => {
      const driver = makeDriver();
      const { handle } = await tasks.start(driver, ['sh', '-c', 'exit 5']);
      await sleep(1000);
      expect((await driver.wait(handle)).exitCode).toBe(5);
    });

    it('passes the environment of the spec', async () => {
      const driver = makeDriver();
      const { handle, taskDir } = await tasks.start(driver, ['sh', '-c', 'echo "$SHOAL_GREETING"'], {
        SHOAL_GREETING: 'hello from shoal',
      });
      expect((await driver.wait(handle)).succeeded).toBe(true);
      expect((await readTaskLogs(taskDir)).stdout.toString('utf8')).toBe('hello from shoal\n');
    });

    it('stops a running task within the grace period plus slack', async () => {
      const driver = makeDriver();
      const { handle } = await tasks.start(driver, ['sleep', '1000']);
      const exit = driver.wait(handle);
      const startedMs = Date.now();
      await driver.stop(handle, { graceMs });
      expect(Date.now() - startedMs).toBeLessThan(graceMs + stopSlackMs);
      expectKilled(await exit);
    });

    it('kills a task that ignores the stop signal once the grace period is over', async () => {
      const driver = makeDriver();
      const { handle, taskDir } = await tasks.start(driver, [
        'sh',
        '-c',
        'trap "" TERM; echo ready; sleep 1000',
      ]);
      // The trap must be in place before the signal, or the shell would die of SIGTERM at once.
      await waitForStdout(taskDir, 'ready');
      const exit = driver.wait(handle);
      const stopGraceMs = 1000;
      const startedMs = performance.now();
      await driver.stop(handle, { graceMs: stopGraceMs });
      const elapsedMs = performance.now() - startedMs;
      expect(elapsedMs).toBeGreaterThanOrEqual(stopGraceMs - 50);
      expect(elapsedMs).toBeLessThan(stopGraceMs + stopSlackMs);
      const result = await exit;
      expect(result).toMatchObject({ signal: 'SIGKILL', reason: 'killed by SIGKILL', succeeded: false });
    });

    it('sends the signal it is asked for', async () => {
      const driver = makeDriver();
      const { handle } = await tasks.start(driver, ['sleep', '1000']);
      const exit = driver.wait(handle);
      await driver.stop(handle, { graceMs: 30_000, signal: 'SIGKILL' });
      expect(await exit).toMatchObject({ signal: 'SIGKILL', succeeded: false });
    });

    it('treats stop of a task that already exited as a no-op', async () => {
      const driver = makeDriver();
      const { handle } = await tasks.start(driver, ['true']);
      expect((await driver.wait(handle)).succeeded).toBe(true);
      const startedMs = Date.now();
      await driver.stop(handle, { graceMs });
      await driver.stop(handle, { graceMs });
      expect(Date.now() - startedMs).toBeLessThan(graceMs + stopSlackMs);
    });

    it('destroys idempotently and keeps the logs', async () => {
      const driver = makeDriver();
      const { handle, taskDir } = await tasks.start(driver, ['sh', '-c', 'echo kept']);
      await driver.wait(handle);
      await driver.destroy(handle);
      await driver.destroy(handle);
      expect((await readTaskLogs(taskDir)).stdout.toString('utf8')).toBe('kept\n');
      expect(await makeDriver().recover(handle)).toBe(false);
    });

    it('ends a task that is destroyed while it runs', async () => {
      const driver = makeDriver();
      const { handle } = await tasks.start(driver, ['sleep', '1000']);
      const exit = driver.wait(handle);
      await driver.destroy(handle);
      expect((await exit).succeeded).toBe(false);
    });

    it('re-attaches a fresh driver instance to a running task from its serialised handle', async () => {
      const first = makeDriver();
      const { handle } = await tasks.start(first, ['sleep', '1000']);
      // What a restarted agent has: the handle as it was persisted.
      const persisted = JSON.parse(JSON.stringify(handle)) as TaskHandle;
      const second = makeDriver();
      tasks.track(second, persisted);
      expect(await second.recover(persisted)).toBe(true);
      const exit = second.wait(persisted);
      await second.stop(persisted, { graceMs });
      expect((await exit).succeeded).toBe(false);
      expect(await makeDriver().recover(persisted)).toBe(false);
    });

    it('keeps a task running when its agent process dies, and a new agent recovers it and its logs', async () => {
      const taskDir = await tasks.dir();
      const handle = await startInDyingAgent(name, options.socketPath, {
        taskId: uniqueTaskId('orphan'),
        spec: makeSpec({
          command: ['sh', '-c', 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.2; done'],
          env: {},
        }),
        taskDir,
      });
      const driver = makeDriver();
      tasks.track(driver, handle);
      expect(await driver.recover(handle)).toBe(true);
      // Output written after the re-attachment still reaches taskDir.
      const sizeAtRecoveryBytes = (await readTaskLogs(taskDir)).stdout.length;
      await waitUntil('the log grows after recovery', async () => {
        return (await readTaskLogs(taskDir)).stdout.length > sizeAtRecoveryBytes + 20;
      });
      const exit = driver.wait(handle);
      await driver.stop(handle, { graceMs });
      expect((await exit).succeeded).toBe(false);
    });

    it('does not re-attach to a task that has finished', async () => {
      const first = makeDriver();
      const { handle } = await tasks.start(first, ['true']);
      await first.wait(handle);
      const persisted = JSON.parse(JSON.stringify(handle)) as TaskHandle;
      expect(await makeDriver().recover(persisted)).toBe(false);
    });
  });
}
