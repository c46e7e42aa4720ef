/**
 * One compliance suite every task driver passes (after Nomad's plugins/drivers/testutils). A driver's test file
 * calls driverCompliance() with a factory and a way to turn a command into a TaskSpec for that driver.
 *
 * Commands are plain POSIX sh and busybox: `sh -c …`, `sleep`, `true`. Timing assertions are upper bounds with
 * several seconds of slack, since CI is a loaded 2-core machine.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import type { TaskDriver, TaskSpec } from '../../src/cluster/task.ts';
import { silentLogger } from '../../src/shared/index.ts';
import {
  createDockerDriver,
  followTaskLogs,
  readTaskLogs,
  type Driver,
  type ExitResult,
  type LogRotation,
  type StartRequest,
  type TaskHandle,
} from '../../src/runtime/drivers/index.ts';

/** The engine and busybox image the docker tests use (CI starts one); empty when not given. */
export const testDockerSocket = process.env['SHOAL_TEST_DOCKER_SOCKET'] ?? '';
export const testDockerImage = process.env['SHOAL_TEST_DOCKER_IMAGE'] ?? '';

/** Why the docker tests cannot run here (no engine given, or it does not answer), or null. */
export async function engineSkipReason(): Promise<string | null> {
  if (testDockerSocket === '' || testDockerImage === '') {
    return 'set SHOAL_TEST_DOCKER_SOCKET to an engine socket and SHOAL_TEST_DOCKER_IMAGE to a busybox image';
  }
  const health = await createDockerDriver({
    logger: silentLogger,
    socketPath: testDockerSocket,
  }).health();
  return health.healthy ? null : `SHOAL_TEST_DOCKER_SOCKET: ${health.detail}`;
}

export interface SpecInput {
  command: string[];
  env: Record<string, string>;
}

export type MakeSpec = (input: SpecInput) => TaskSpec;

/** What the suite varies in a driver's configuration. */
export interface DriverTestInit {
  logRotation?: LogRotation;
}

export type MakeDriver = (init?: DriverTestInit) => Driver;

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

/**
 * Starts a task from a separate Node process that stays, like an agent, until it is SIGKILLed here once the
 * handle is out. Returns the handle.
 */
export async function startInKilledAgent(
  driver: TaskDriver,
  socketPath: string | undefined,
  request: StartRequest,
): Promise<TaskHandle> {
  const input = JSON.stringify({
    driver,
    ...(socketPath === undefined ? {} : { socketPath }),
    hold: true,
    request,
  });
  const agent = spawn(
    process.execPath,
    ['--experimental-strip-types', '--disable-warning=ExperimentalWarning', dyingAgentPath, input],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = new Promise<void>((resolve) => agent.once('exit', () => resolve()));
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let text = '';
      const timer = setTimeout(
        () => reject(new Error('the agent process printed no handle within 30 s')),
        30_000,
      );
      agent.stdout.on('data', (chunk: Buffer) => {
        text += chunk.toString('utf8');
        const end = text.indexOf('\n');
        if (end !== -1) {
          clearTimeout(timer);
          resolve(text.slice(0, end));
        }
      });
      agent.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the agent process exited (${code}) before it printed a handle`));
      });
    });
    return JSON.parse(line) as TaskHandle;
  } finally {
    agent.kill('SIGKILL');
    await exited;
  }
}

/** The sizes of a stream's log files in taskDir, by name. */
export async function logFileSizes(
  taskDir: string,
  stream: 'stdout' | 'stderr',
): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  for (const name of await readdir(taskDir)) {
    if (name === `${stream}.log` || name.startsWith(`${stream}.log.`)) {
      sizes.set(name, (await stat(join(taskDir, name))).size);
    }
  }
  return sizes;
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
  /** Names the suite when a driver runs it twice (exec, isolated and not). Default: the driver's name. */
  title?: string;
}

export function driverCompliance(
  name: TaskDriver,
  makeDriver: MakeDriver,
  makeSpec: MakeSpec,
  options: ComplianceOptions = {},
): void {
  describe(`${options.title ?? name} driver compliance`, { timeout: taskTestTimeoutMs }, () => {
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
      // Stopped but not destroyed: a later agent still learns how it ended. Once destroyed, nothing is left.
      const third = makeDriver();
      expect(await third.recover(persisted)).toBe(true);
      expectKilled(await third.wait(persisted));
      await third.destroy(persisted);
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

    it('re-attaches to a task that has finished, reports its exit code, and forgets it once destroyed', async () => {
      const first = makeDriver();
      const { handle } = await tasks.start(first, ['sh', '-c', 'exit 6']);
      expect((await first.wait(handle)).exitCode).toBe(6);
      const persisted = JSON.parse(JSON.stringify(handle)) as TaskHandle;
      const second = makeDriver();
      expect(await second.recover(persisted)).toBe(true);
      expect(await second.wait(persisted)).toEqual({
        exitCode: 6,
        signal: null,
        oomKilled: false,
        reason: 'exit code 6',
        succeeded: false,
      });
      await second.destroy(persisted);
      expect(await makeDriver().recover(persisted)).toBe(false);
    });

    it('reports the exit code of a task whose agent was SIGKILLed, when the task ends later', async () => {
      const taskDir = await tasks.dir();
      const handle = await startInKilledAgent(name, options.socketPath, {
        taskId: uniqueTaskId('killed'),
        spec: makeSpec({
          command: ['sh', '-c', 'trap "exit 7" TERM; echo ready; while true; do sleep 0.1; done'],
          env: {},
        }),
        taskDir,
      });
      const driver = makeDriver();
      tasks.track(driver, handle);
      expect(await driver.recover(handle)).toBe(true);
      const exit = driver.wait(handle);
      // The trap must be set before the signal comes.
      await waitForStdout(taskDir, 'ready');
      await driver.stop(handle, { graceMs: 20_000 });
      expect(await exit).toEqual({
        exitCode: 7,
        signal: null,
        oomKilled: false,
        reason: 'exit code 7',
        succeeded: false,
      });
    });

    it('reports the exit code and output of a task that ended while its agent was dead', async () => {
      const taskDir = await tasks.dir();
      const handle = await startInKilledAgent(name, options.socketPath, {
        taskId: uniqueTaskId('ended'),
        spec: makeSpec({ command: ['sh', '-c', 'echo bye; exit 4'], env: {} }),
        taskDir,
      });
      // No agent runs meanwhile; the task ends on its own.
      await sleep(2000);
      const driver = makeDriver();
      tasks.track(driver, handle);
      expect(await driver.recover(handle)).toBe(true);
      expect(await driver.wait(handle)).toEqual({
        exitCode: 4,
        signal: null,
        oomKilled: false,
        reason: 'exit code 4',
        succeeded: false,
      });
      expect((await readTaskLogs(taskDir)).stdout.toString('utf8')).toBe('bye\n');
    });

    it('streams the output of a running task to followTaskLogs', async () => {
      const driver = makeDriver();
      const { handle, taskDir } = await tasks.start(driver, [
        'sh',
        '-c',
        'for i in 1 2 3; do echo "out $i"; echo "err $i" >&2; sleep 0.3; done',
      ]);
      const controller = new AbortController();
      const text = { stdout: '', stderr: '' };
      const following = (async () => {
        const options = { signal: controller.signal, fromBytes: Infinity, pollIntervalMs: 100 };
        for await (const chunk of followTaskLogs(taskDir, options))
          text[chunk.stream] += chunk.data.toString('utf8');
      })();
      await waitUntil('the first line arrives while the task runs', () =>
        Promise.resolve(text.stdout.includes('out 1')),
      );
      expect((await driver.wait(handle)).succeeded).toBe(true);
      await waitUntil('every line arrives', () =>
        Promise.resolve(text.stdout === 'out 1\nout 2\nout 3\n' && text.stderr === 'err 1\nerr 2\nerr 3\n'),
      );
      controller.abort();
      await following;
    });

    it('caps its log files, rotates them, and reads them back across rotation', async () => {
      const fileBytesMax = 1000;
      const driver = makeDriver({ logRotation: { fileBytesMax, filesMax: 3 } });
      // 200 numbered lines, 5000 bytes in all: more than the 3000 bytes three files keep.
      const { handle, taskDir } = await tasks.start(driver, [
        'sh',
        '-c',
        'i=1000; while [ $i -lt 1200 ]; do echo "line $i abcdefghijklmn"; i=$((i+1)); done',
      ]);
      expect((await driver.wait(handle)).succeeded).toBe(true);
      const written = Array.from({ length: 200 }, (_, k) => `line ${1000 + k} abcdefghijklmn\n`).join('');
      const sizes = await logFileSizes(taskDir, 'stdout');
      expect([...sizes.keys()].sort()).toEqual(['stdout.log', 'stdout.log.1', 'stdout.log.2']);
      for (const sizeBytes of sizes.values()) expect(sizeBytes).toBeLessThanOrEqual(fileBytesMax);
      // What is kept is the end of what was written, in order, across the three files.
      const kept = (await readTaskLogs(taskDir, { tailBytes: 10_000 })).stdout.toString('utf8');
      expect(kept.length).toBe([...sizes.values()].reduce((sum, size) => sum + size, 0));
      expect(kept).toBe(written.slice(-kept.length));
      const tail = (await readTaskLogs(taskDir, { tailBytes: 1500 })).stdout.toString('utf8');
      expect(tail).toBe(kept.slice(-1500));
    });
  });
}
