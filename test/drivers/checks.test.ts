/**
 * Drivers' execCheck against real processes: the exec driver's on this host, and the docker driver's inside a
 * container. The docker cases need the engine docker.test.ts uses, else they are skipped:
 *   SHOAL_TEST_DOCKER_SOCKET  the engine's unix socket (e.g. /tmp/shoal-dockerd/docker.sock)
 *   SHOAL_TEST_DOCKER_IMAGE   a local busybox image with sh, sleep, echo and cat
 * The "engine down" case needs no engine and always runs.
 */
import { readFile, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { TaskSpec } from '../../src/cluster/task.ts';
import {
  createDockerDriver,
  createExecDriver,
  execPathDefault,
  type Driver,
  type TaskHandle,
} from '../../src/runtime/drivers/index.ts';
import { isShoalError, silentLogger } from '../../src/shared/index.ts';
import {
  createTaskTracker,
  engineSkipReason,
  taskTestTimeoutMs,
  testDockerImage,
  testDockerSocket,
  uniqueTaskId,
  waitUntil,
  type SpecInput,
} from './compliance.ts';

const mebibyte = 1024 * 1024;
/** Far above what a check that is killed on time takes, for a loaded 2-core machine. */
const promptMs = 10_000;

type ExecCheck = NonNullable<Driver['execCheck']>;

/** The driver's execCheck, which these drivers must have. */
function execCheckOf(driver: Driver): ExecCheck {
  const execCheck = driver.execCheck?.bind(driver);
  if (execCheck === undefined) throw new Error(`the ${driver.name} driver has no execCheck`);
  return execCheck;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('exec driver execCheck', { timeout: taskTestTimeoutMs }, () => {
  const makeSpec = ({ command, env }: SpecInput): TaskSpec => ({
    name: 'checks-test',
    driver: 'exec',
    command,
    cpuMillis: 100,
    memoryBytes: 64 * mebibyte,
    priority: 50,
    env,
    constraints: {},
  });
  const tasks = createTaskTracker(makeSpec, 'check');
  afterEach(() => tasks.cleanup());
  const driver = createExecDriver({ logger: silentLogger, cgroupMounts: null });
  const execCheck = execCheckOf(driver);

  /** A running task, and the check request's defaults for it: its directory and no env. */
  const startTask = async (): Promise<{ handle: TaskHandle; taskDir: string }> =>
    tasks.start(driver, ['sleep', '1000']);

  it('reports the exit code, and stdout and stderr together', async () => {
    const { handle, taskDir } = await startTask();
    const result = await execCheck(handle, {
      command: ['sh', '-c', 'echo out; echo err >&2; exit 3'],
      env: {},
      cwd: taskDir,
      timeoutMs: 10_000,
    });
    expect(result).toMatchObject({ exitCode: 3, timedOut: false });
    // Two pipes: which one is read first is up to the event loop.
    expect(result.output.split('\n').sort()).toEqual(['', 'err', 'out']);
    expect(await execCheck(handle, { command: ['true'], env: {}, cwd: taskDir, timeoutMs: 10_000 })).toEqual({
      exitCode: 0,
      output: '',
      timedOut: false,
    });
  });

  it("runs in the task's directory with the env given, the default PATH, and nothing of the agent's env", async () => {
    const { handle, taskDir } = await startTask();
    const script = 'pwd; echo "$GREETING"; echo "$PATH"; echo "${VITEST:-unset}"';
    const result = await execCheck(handle, {
      command: ['sh', '-c', script],
      env: { GREETING: 'hello there' },
      cwd: taskDir,
      timeoutMs: 10_000,
    });
    expect(process.env['VITEST']).toBeDefined();
    expect(result.output.split('\n')).toEqual([
      await realpath(taskDir),
      'hello there',
      execPathDefault,
      'unset',
      '',
    ]);
    expect(result.exitCode).toBe(0);
  });

  it('keeps the first 4 KiB of the output', async () => {
    const { handle, taskDir } = await startTask();
    const result = await execCheck(handle, {
      command: ['sh', '-c', 'head -c 100000 /dev/zero | tr "\\0" a'],
      env: {},
      cwd: taskDir,
      timeoutMs: 10_000,
    });
    expect(result.exitCode).toBe(0);
    expect(result.output).toBe('a'.repeat(4096));
  });

  it('kills the process group of a command that outruns its timeout', async () => {
    const { handle, taskDir } = await startTask();
    const startedMs = Date.now();
    const result = await execCheck(handle, {
      command: ['sh', '-c', 'sleep 600 & echo $! > child.pid; echo started; sleep 600'],
      env: {},
      cwd: taskDir,
      timeoutMs: 500,
    });
    expect(result).toEqual({ exitCode: null, output: 'started\n', timedOut: true });
    expect(Date.now() - startedMs).toBeLessThan(promptMs);
    const childPid = Number(await readFile(join(taskDir, 'child.pid'), 'utf8'));
    await waitUntil(`the check's background sleep (pid ${childPid}) is killed`, () =>
      Promise.resolve(!pidAlive(childPid)),
    );
  });

  it('answers once the command exits, ending what it left running', async () => {
    const { handle, taskDir } = await startTask();
    const startedMs = Date.now();
    const result = await execCheck(handle, {
      command: ['sh', '-c', 'sleep 600 & echo $! > child.pid; exit 0'],
      env: {},
      cwd: taskDir,
      timeoutMs: 30_000,
    });
    expect(result).toEqual({ exitCode: 0, output: '', timedOut: false });
    expect(Date.now() - startedMs).toBeLessThan(promptMs);
    const childPid = Number(await readFile(join(taskDir, 'child.pid'), 'utf8'));
    await waitUntil(`the check's background sleep (pid ${childPid}) is killed`, () =>
      Promise.resolve(!pidAlive(childPid)),
    );
  });

  it('says so, without throwing, when the command is not there or cannot run', async () => {
    const { handle, taskDir } = await startTask();
    expect(
      await execCheck(handle, {
        command: ['shoal-no-such-command'],
        env: {},
        cwd: taskDir,
        timeoutMs: 10_000,
      }),
    ).toEqual({ exitCode: null, output: 'command not found: shoal-no-such-command', timedOut: false });
    const gone = await execCheck(handle, {
      command: ['true'],
      env: {},
      cwd: join(taskDir, 'no-such-dir'),
      timeoutMs: 10_000,
    });
    expect(gone).toMatchObject({ exitCode: null, timedOut: false });
    expect(gone.output).toMatch(/^cannot run true: /);
  });

  it('rejects a handle of another driver', async () => {
    const handle: TaskHandle = { taskId: uniqueTaskId('other'), driver: 'docker', state: {} };
    await expect(
      execCheck(handle, { command: ['true'], env: {}, cwd: '/', timeoutMs: 1000 }),
    ).rejects.toSatisfy((error) => isShoalError(error, 'INVALID_ARGUMENT'));
  });
});

const socketPath = testDockerSocket;
const image = testDockerImage;
const skipReason = await engineSkipReason();

const makeDockerSpec = ({ command, env }: SpecInput): TaskSpec => ({
  name: 'checks-test',
  driver: 'docker',
  image,
  command,
  cpuMillis: 500,
  memoryBytes: 64 * mebibyte,
  priority: 50,
  env,
  constraints: {},
});

describe('docker driver execCheck with its engine down', { timeout: taskTestTimeoutMs }, () => {
  it('rejects with DRIVER_UNAVAILABLE', async () => {
    const missingSocket = join('/tmp', `shoal-no-engine-${process.pid}`, 'docker.sock');
    const driver = createDockerDriver({ logger: silentLogger, socketPath: missingSocket });
    const handle: TaskHandle = {
      taskId: uniqueTaskId('down'),
      driver: 'docker',
      state: { containerId: 'c0ffee', containerName: 'shoal-x', image: 'busybox:1', taskDir: '/tmp' },
    };
    await expect(
      execCheckOf(driver)(handle, { command: ['true'], env: {}, cwd: '/tmp', timeoutMs: 5000 }),
    ).rejects.toSatisfy(
      (error) =>
        isShoalError(error, 'DRIVER_UNAVAILABLE') &&
        error.message.startsWith(`docker engine unreachable at ${missingSocket}:`),
    );
  });
});

describe.skipIf(skipReason !== null)(
  `docker driver execCheck on a real engine${skipReason === null ? '' : ` (skipped: ${skipReason})`}`,
  { timeout: taskTestTimeoutMs },
  () => {
    const tasks = createTaskTracker(makeDockerSpec, 'check');
    afterEach(() => tasks.cleanup());
    const driver = createDockerDriver({ logger: silentLogger, socketPath });
    const execCheck = execCheckOf(driver);

    it("runs the command in the container, with the task's env and the check's, and reports its exit code", async () => {
      const { handle, taskDir } = await tasks.start(driver, ['sleep', '1000'], { FROM_TASK: 'task value' });
      const result = await execCheck(handle, {
        command: [
          'sh',
          '-c',
          // One write per line: the runtime reads stdout and stderr apart, so "err" may land between
          // two writes to stdout.
          'echo "$FROM_TASK/$FROM_CHECK"; echo "$(tr "\\0" " " < /proc/1/cmdline)"; echo err >&2; exit 3',
        ],
        env: { FROM_CHECK: 'check value' },
        cwd: taskDir,
        timeoutMs: 20_000,
      });
      expect(result).toMatchObject({ exitCode: 3, timedOut: false });
      // The container's process 1 is the task's: the command ran in there. stdout and stderr come apart
      // from the runtime, in either order.
      expect(result.output.split('\n').sort()).toEqual(['', 'err', 'sleep 1000 ', 'task value/check value']);
      expect(
        await execCheck(handle, { command: ['true'], env: {}, cwd: taskDir, timeoutMs: 20_000 }),
      ).toEqual({
        exitCode: 0,
        output: '',
        timedOut: false,
      });
    });

    it('answers at the timeout for a command that runs on', async () => {
      const { handle, taskDir } = await tasks.start(driver, ['sleep', '1000']);
      const startedMs = Date.now();
      const result = await execCheck(handle, {
        command: ['sh', '-c', 'echo started; sleep 600'],
        env: {},
        cwd: taskDir,
        timeoutMs: 1000,
      });
      expect(result).toMatchObject({ exitCode: null, timedOut: true });
      expect(Date.now() - startedMs).toBeLessThan(promptMs);
    });

    it('rejects, saying why, when the container no longer runs', async () => {
      const { handle, taskDir } = await tasks.start(driver, ['true']);
      await driver.wait(handle);
      await expect(
        execCheck(handle, { command: ['true'], env: {}, cwd: taskDir, timeoutMs: 20_000 }),
      ).rejects.toSatisfy(
        (error) =>
          isShoalError(error) &&
          /^docker could not run a check in task .*: .*not running/.test(error.message),
      );
    });

    it('says so, without throwing, when the container lacks the command', async () => {
      const { handle, taskDir } = await tasks.start(driver, ['sleep', '1000']);
      expect(
        await execCheck(handle, {
          command: ['shoal-no-such-command'],
          env: {},
          cwd: taskDir,
          timeoutMs: 20_000,
        }),
      ).toEqual({ exitCode: null, output: 'command not found: shoal-no-such-command', timedOut: false });
    });
  },
);
