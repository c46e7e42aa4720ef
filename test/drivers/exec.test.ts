import { readdir, readFile, realpath } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { TaskSpec } from '../../src/cluster/task.ts';
import {
  createExecDriver,
  execPathDefault,
  exitedWhileAgentDownReason,
  readTaskLogs,
  type Driver,
  type TaskHandle,
} from '../../src/runtime/drivers/index.ts';
import { isShoalError, silentLogger } from '../../src/shared/index.ts';
import {
  createTaskTracker,
  driverCompliance,
  taskTestTimeoutMs,
  uniqueTaskId,
  waitForStdout,
  type SpecInput,
} from './compliance.ts';

const makeSpec = ({ command, env }: SpecInput): TaskSpec => ({
  name: 'exec-test',
  driver: 'exec',
  command,
  cpuMillis: 100,
  memoryBytes: 64 * 1024 * 1024,
  priority: 50,
  env,
  constraints: {},
});

const makeDriver = (): Driver => createExecDriver({ logger: silentLogger });

driverCompliance('exec', makeDriver, makeSpec);

/** Live (non-zombie) processes of a process group, by command name, read from /proc. */
async function liveGroupMembers(groupId: number): Promise<string[]> {
  const names: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const text = await readFile(`/proc/${entry}/stat`, 'latin1').catch(() => null);
    if (text === null) continue;
    const name = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
    const [state, , group] = text.slice(text.lastIndexOf(')') + 2).split(' ');
    if (Number(group) === groupId && state !== 'Z' && state !== 'X') names.push(name);
  }
  return names;
}

async function waitForMembers(groupId: number, name: string, countMin: number): Promise<void> {
  for (let attempt = 0; attempt < 400; attempt += 1) {
    if ((await liveGroupMembers(groupId)).filter((member) => member === name).length >= countMin) return;
    await sleep(50);
  }
  throw new Error(`process group ${groupId} never had ${countMin} live ${name} processes`);
}

function pidOf(handle: TaskHandle): number {
  const pid = handle.state['pid'];
  if (typeof pid !== 'number') throw new Error('exec handle without a pid');
  return pid;
}

describe('exec driver', { timeout: taskTestTimeoutMs }, () => {
  const tasks = createTaskTracker(makeSpec, 'exec');
  afterEach(() => tasks.cleanup());

  it('rejects a command that does not exist with a reason a user can read', async () => {
    const driver = makeDriver();
    const start = driver.start({
      taskId: uniqueTaskId('missing'),
      spec: makeSpec({ command: ['shoal-no-such-command', '--flag'], env: {} }),
      taskDir: await tasks.dir(),
    });
    await expect(start).rejects.toSatisfy(
      (error) =>
        isShoalError(error, 'INVALID_ARGUMENT') &&
        error.message === 'command not found: shoal-no-such-command',
    );
  });

  it('rejects a spec meant for another driver', async () => {
    const spec: TaskSpec = {
      ...makeSpec({ command: ['true'], env: {} }),
      driver: 'docker',
      image: 'busybox',
    };
    const start = makeDriver().start({ taskId: uniqueTaskId('wrong'), spec, taskDir: await tasks.dir() });
    await expect(start).rejects.toSatisfy((error) => isShoalError(error, 'INVALID_ARGUMENT'));
  });

  it('runs in the task directory with a minimal environment', async () => {
    process.env['SHOAL_TEST_LEAK'] = 'agent secret';
    try {
      const driver = makeDriver();
      const { handle, taskDir } = await tasks.start(driver, [
        'sh',
        '-c',
        'pwd; echo "PATH=$PATH"; echo "HOME=$HOME"; echo "LEAK=${SHOAL_TEST_LEAK-unset}"',
      ]);
      expect((await driver.wait(handle)).succeeded).toBe(true);
      const lines = (await readTaskLogs(taskDir)).stdout.toString('utf8').trim().split('\n');
      expect(lines).toEqual([
        await realpath(taskDir),
        `PATH=${execPathDefault}`,
        `HOME=${taskDir}`,
        'LEAK=unset',
      ]);
    } finally {
      delete process.env['SHOAL_TEST_LEAK'];
    }
  });

  it('stops the whole process tree, background children included', async () => {
    const driver = makeDriver();
    const { handle } = await tasks.start(driver, ['sh', '-c', 'sleep 1000 & sleep 1000']);
    const groupId = pidOf(handle);
    await waitForMembers(groupId, 'sleep', 2);
    const exit = driver.wait(handle);
    await driver.stop(handle, { graceMs: 2000 });
    expect((await exit).succeeded).toBe(false);
    expect(await liveGroupMembers(groupId)).toEqual([]);
  });

  it('frees processes a task left behind when it is destroyed', async () => {
    const driver = makeDriver();
    const { handle, taskDir } = await tasks.start(driver, ['sh', '-c', 'sleep 1000 & echo started']);
    const groupId = pidOf(handle);
    expect(await driver.wait(handle)).toMatchObject({ exitCode: 0, succeeded: true });
    await waitForStdout(taskDir, 'started');
    await waitForMembers(groupId, 'sleep', 1);
    await driver.destroy(handle);
    expect(await liveGroupMembers(groupId)).toEqual([]);
  });

  it('keeps writing the logs through its own file descriptors', async () => {
    const driver = makeDriver();
    const { handle, taskDir } = await tasks.start(driver, [
      'sh',
      '-c',
      'i=0; while [ $i -lt 5 ]; do echo "line $i"; i=$((i+1)); done',
    ]);
    await driver.wait(handle);
    const { stdout } = await readTaskLogs(taskDir, { tailBytes: 7 });
    expect(stdout.toString('utf8')).toBe('line 4\n');
  });

  it('reports a recovered task that ends as exited while the agent was down', async () => {
    const { handle } = await tasks.start(makeDriver(), ['sleep', '1000']);
    const second = makeDriver();
    expect(await second.recover(handle)).toBe(true);
    const exit = second.wait(handle);
    process.kill(-pidOf(handle), 'SIGTERM');
    expect(await exit).toEqual({
      exitCode: null,
      signal: null,
      oomKilled: false,
      reason: exitedWhileAgentDownReason,
      succeeded: false,
    });
  });

  it('does not mistake a process that reused the pid for the task', async () => {
    // process.pid is alive, but started at another time than the handle says: a reused pid.
    const handle: TaskHandle = {
      taskId: uniqueTaskId('reused'),
      driver: 'exec',
      state: { pid: process.pid, startedAtMs: Date.now(), procStartTicks: 1 },
    };
    const driver = makeDriver();
    expect(await driver.recover(handle)).toBe(false);
    // Nor must stop or destroy signal it (this test process would die).
    await driver.stop(handle, { graceMs: 0 });
    await driver.destroy(handle);
  });

  it('rejects a handle it cannot read, and wait() on a task it is not attached to', async () => {
    const driver = makeDriver();
    const broken: TaskHandle = { taskId: uniqueTaskId('broken'), driver: 'exec', state: {} };
    await expect(driver.recover(broken)).rejects.toSatisfy((error) =>
      isShoalError(error, 'INVALID_ARGUMENT'),
    );
    const foreign: TaskHandle = {
      taskId: uniqueTaskId('foreign'),
      driver: 'docker',
      state: { containerId: 'x' },
    };
    await expect(driver.stop(foreign, { graceMs: 0 })).rejects.toSatisfy((error) =>
      isShoalError(error, 'INVALID_ARGUMENT'),
    );
    const unknown: TaskHandle = {
      taskId: uniqueTaskId('unknown'),
      driver: 'exec',
      state: { pid: 2, startedAtMs: 0 },
    };
    await expect(driver.wait(unknown)).rejects.toSatisfy((error) => isShoalError(error, 'NOT_FOUND'));
  });
});
