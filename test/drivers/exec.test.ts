import { access, chmod, constants, readdir, readFile, realpath, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { TaskSpec } from '../../src/cluster/task.ts';
import {
  createExecDriver,
  detectCgroupMounts,
  execPathDefault,
  readTaskLogs,
  type CgroupMounts,
  type Driver,
  type ExecDriverInit,
  type TaskEvent,
  type TaskHandle,
} from '../../src/runtime/drivers/index.ts';
import { runtimeDirName, taskFileName, type TaskRecord } from '../../src/runtime/drivers/shim.ts';
import { isShoalError, silentLogger } from '../../src/shared/index.ts';
import {
  createTaskTracker,
  driverCompliance,
  taskTestTimeoutMs,
  uniqueTaskId,
  waitForStdout,
  waitUntil,
  type DriverTestInit,
  type SpecInput,
} from './compliance.ts';

const mebibyte = 1024 * 1024;

const makeSpec = ({ command, env }: SpecInput): TaskSpec => ({
  name: 'exec-test',
  driver: 'exec',
  command,
  cpuMillis: 100,
  memoryBytes: 64 * mebibyte,
  priority: 50,
  env,
  constraints: {},
});

const makeDriver = (init: DriverTestInit & Partial<ExecDriverInit> = {}): Driver =>
  createExecDriver({ logger: silentLogger, ...init });

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

/** Whether a pid names a live, non-zombie process. */
async function alive(pid: number): Promise<boolean> {
  const text = await readFile(`/proc/${pid}/stat`, 'latin1').catch(() => null);
  if (text === null) return false;
  const state = text.slice(text.lastIndexOf(')') + 2).split(' ')[0];
  return state !== 'Z' && state !== 'X';
}

/** The task's leader (also its process group id), once the shim has recorded it. */
async function leaderPid(taskDir: string): Promise<number> {
  const found: { pid?: number } = {};
  await waitUntil('the shim records the task pid', async () => {
    const text = await readFile(join(taskDir, runtimeDirName, taskFileName), 'utf8').catch(() => null);
    if (text !== null) found.pid = (JSON.parse(text) as TaskRecord).pid;
    return found.pid !== undefined;
  });
  if (found.pid === undefined) throw new Error('no task pid');
  return found.pid;
}

/** The line of /proc/<pid>/cgroup for a v1 controller ("4:memory:/shoal/x" → "/shoal/x"), or the v2 one ("0::…"). */
async function cgroupOf(pid: number, controller: string | null): Promise<string | null> {
  const text = await readFile(`/proc/${pid}/cgroup`, 'utf8');
  for (const line of text.split('\n')) {
    const [, controllers, path] = line.split(':');
    if (controllers === undefined || path === undefined) continue;
    if (controller === null ? controllers === '' : controllers.split(',').includes(controller)) return path;
  }
  return null;
}

async function exists(path: string): Promise<boolean> {
  return access(path, constants.F_OK).then(
    () => true,
    () => false,
  );
}

function shimPidOf(handle: TaskHandle): number {
  const pid = handle.state['shimPid'];
  if (typeof pid !== 'number') throw new Error('exec handle without a shimPid');
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

  it('rejects a command that is not executable, looked up in the PATH of the spec', async () => {
    const taskDir = await tasks.dir();
    await writeFile(join(taskDir, 'script.sh'), '#!/bin/sh\necho hi\n');
    await chmod(join(taskDir, 'script.sh'), 0o644);
    const start = makeDriver().start({
      taskId: uniqueTaskId('noexec'),
      spec: makeSpec({ command: ['./script.sh'], env: {} }),
      taskDir,
    });
    await expect(start).rejects.toSatisfy(
      (error) =>
        isShoalError(error, 'INVALID_ARGUMENT') &&
        error.message === 'command not executable (permission denied): ./script.sh',
    );
    await chmod(join(taskDir, 'script.sh'), 0o755);
    const driver = makeDriver();
    const { handle } = await tasks.start(driver, ['script.sh'], { PATH: taskDir });
    expect((await driver.wait(handle)).succeeded).toBe(true);
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
    const { handle, taskDir } = await tasks.start(driver, ['sh', '-c', 'sleep 1000 & sleep 1000']);
    const groupId = await leaderPid(taskDir);
    await waitForMembers(groupId, 'sleep', 2);
    const exit = driver.wait(handle);
    await driver.stop(handle, { graceMs: 2000 });
    expect((await exit).succeeded).toBe(false);
    expect(await liveGroupMembers(groupId)).toEqual([]);
  });

  it('frees processes a task left behind when it is destroyed', async () => {
    const driver = makeDriver();
    const { handle, taskDir } = await tasks.start(driver, ['sh', '-c', 'sleep 1000 & echo started']);
    const groupId = await leaderPid(taskDir);
    expect(await driver.wait(handle)).toMatchObject({ exitCode: 0, succeeded: true });
    await waitForStdout(taskDir, 'started');
    await waitForMembers(groupId, 'sleep', 1);
    await driver.destroy(handle);
    expect(await liveGroupMembers(groupId)).toEqual([]);
    // destroy() also removes the launch file, which holds the task's environment.
    expect(await exists(join(taskDir, runtimeDirName))).toBe(false);
  });

  it('keeps writing the logs after the leader exits while a child still holds them', async () => {
    const driver = makeDriver();
    const { handle, taskDir } = await tasks.start(driver, [
      'sh',
      '-c',
      '(sleep 0.5; echo "from the child") & echo "from the leader"',
    ]);
    expect((await driver.wait(handle)).succeeded).toBe(true);
    await waitForStdout(taskDir, 'from the child');
    expect((await readTaskLogs(taskDir)).stdout.toString('utf8')).toBe('from the leader\nfrom the child\n');
  });

  it('reports an exit status it cannot know when the shim is killed', async () => {
    const driver = makeDriver();
    const { handle, taskDir } = await tasks.start(driver, ['sleep', '1000']);
    await leaderPid(taskDir);
    const exit = driver.wait(handle);
    process.kill(shimPidOf(handle), 'SIGKILL');
    expect(await exit).toMatchObject({
      exitCode: null,
      succeeded: false,
      reason: expect.stringMatching(/^exit status unknown: the task's exec shim ended/) as unknown,
    });
  });

  it('does not mistake a process that reused the pid for the task', async () => {
    // process.pid is alive, but started at another time than the handle says: a reused pid.
    const handle: TaskHandle = {
      taskId: uniqueTaskId('reused'),
      driver: 'exec',
      state: { shimPid: process.pid, shimStartTicks: 1, startedAtMs: Date.now(), taskDir: await tasks.dir() },
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
    // The shape of a pre-shim handle (the task's own pid), which no release ever wrote: unreadable too, and
    // nothing is signalled on its say-so (process.pid would be this test).
    const preShim: TaskHandle = {
      taskId: uniqueTaskId('broken'),
      driver: 'exec',
      state: { pid: process.pid, startedAtMs: Date.now(), procStartTicks: null },
    };
    for (const call of [
      (): Promise<unknown> => driver.recover(preShim),
      (): Promise<unknown> => driver.stop(preShim, { graceMs: 0 }),
      (): Promise<unknown> => driver.destroy(preShim),
    ]) {
      await expect(call()).rejects.toSatisfy((error) => isShoalError(error, 'INVALID_ARGUMENT'));
    }
    const brokenShim: TaskHandle = {
      taskId: uniqueTaskId('broken'),
      driver: 'exec',
      state: { shimPid: 'x' },
    };
    await expect(driver.recover(brokenShim)).rejects.toSatisfy((error) =>
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
      state: { shimPid: 2, shimStartTicks: null, startedAtMs: 0, taskDir: await tasks.dir() },
    };
    await expect(driver.wait(unknown)).rejects.toSatisfy((error) => isShoalError(error, 'NOT_FOUND'));
  });
});

describe('exec driver limits where cgroups cannot be made', { timeout: taskTestTimeoutMs }, () => {
  const tasks = createTaskTracker(makeSpec, 'nolimits');
  afterEach(() => tasks.cleanup());

  const startReporting = async (
    driver: Driver,
  ): Promise<{ handle: TaskHandle; events: TaskEvent[]; taskDir: string }> => {
    const events: TaskEvent[] = [];
    const taskDir = await tasks.dir();
    const handle = await driver.start({
      taskId: uniqueTaskId('nolimits'),
      spec: makeSpec({ command: ['sh', '-c', 'echo ran'], env: {} }),
      taskDir,
      onEvent: (event) => events.push(event),
    });
    tasks.track(driver, handle);
    return { handle, events, taskDir };
  };

  it('runs the task and says plainly which limits it does not enforce', async () => {
    // Hierarchies that cannot be written to, as for an agent that is not root.
    const driver = makeDriver({
      cgroupMounts: { v1: { cpu: '/proc/shoal-no-cgroup', memory: '/proc/shoal-no-cgroup' }, v2: null },
    });
    const { handle, events, taskDir } = await startReporting(driver);
    expect(handle.warnings).toEqual([
      expect.stringMatching(/^cpu limit not enforced: .*\/proc\/shoal-no-cgroup/) as unknown,
      expect.stringMatching(/^memory limit not enforced: .*\/proc\/shoal-no-cgroup/) as unknown,
      expect.stringMatching(/^pids limit not enforced: no pids cgroup controller on this node/) as unknown,
    ]);
    expect(events).toEqual(handle.warnings?.map((message) => ({ type: 'limit:unenforced', message })));
    expect((await driver.wait(handle)).succeeded).toBe(true);
    expect((await readTaskLogs(taskDir)).stdout.toString('utf8')).toBe('ran\n');
    // The warnings travel with the persisted handle.
    expect((JSON.parse(JSON.stringify(handle)) as TaskHandle).warnings).toEqual(handle.warnings);
  });

  it('says so when cgroups are turned off, or the node has no controllers', async () => {
    const off = await startReporting(makeDriver({ cgroupMounts: null }));
    expect(off.handle.warnings).toEqual([
      'cpu limit not enforced: cgroups are turned off for the exec driver',
      'memory limit not enforced: cgroups are turned off for the exec driver',
      'pids limit not enforced: cgroups are turned off for the exec driver',
    ]);
    const none = await startReporting(makeDriver({ cgroupMounts: { v1: {}, v2: null } }));
    expect(none.handle.warnings).toEqual([
      expect.stringMatching(/^cpu limit not enforced: no cpu cgroup controller on this node/) as unknown,
      expect.stringMatching(
        /^memory limit not enforced: no memory cgroup controller on this node/,
      ) as unknown,
      expect.stringMatching(/^pids limit not enforced: no pids cgroup controller on this node/) as unknown,
    ]);
    expect((await makeDriver({ cgroupMounts: null }).health()).detail).toContain('limits not enforced');
  });
});

const hostMounts = await detectCgroupMounts();
const isRoot = process.getuid?.() === 0;
const v1Limits = isRoot && hostMounts.v1['cpu'] !== undefined && hostMounts.v1['memory'] !== undefined;
const v2Controllers = hostMounts.v2?.controllers ?? [];
const v2Limits =
  isRoot && hostMounts.v2 !== null && v2Controllers.includes('cpu') && v2Controllers.includes('memory');
/** Each test run uses its own parent, so runs side by side do not meet and leftovers are easy to find. */
const cgroupParent = `shoal-test-${process.pid}`;
afterAll(async () => {
  const mountPoints = [
    ...Object.values(hostMounts.v1),
    ...(hostMounts.v2 === null ? [] : [hostMounts.v2.mountPoint]),
  ];
  for (const mountPoint of new Set(mountPoints))
    await rmdir(join(mountPoint, cgroupParent)).catch(() => undefined);
});

describe.skipIf(!(v1Limits || v2Limits))(
  `exec driver with this node's cgroups${v1Limits || v2Limits ? '' : ' (skipped: needs root and cpu+memory controllers)'}`,
  { timeout: taskTestTimeoutMs },
  () => {
    const tasks = createTaskTracker(makeSpec, 'cgroup');
    afterEach(() => tasks.cleanup());
    const cgroupDriver = (): Driver => makeDriver({ cgroupParent });
    const cpuDir = (taskId: string): string =>
      v1Limits
        ? join(hostMounts.v1['cpu']!, cgroupParent, taskId)
        : join(hostMounts.v2!.mountPoint, cgroupParent, taskId);
    const memoryDir = (taskId: string): string =>
      v1Limits
        ? join(hostMounts.v1['memory']!, cgroupParent, taskId)
        : join(hostMounts.v2!.mountPoint, cgroupParent, taskId);

    it('runs each task in its own cgroups with its CPU and memory limits, and removes them on destroy', async () => {
      const driver = cgroupDriver();
      const taskId = uniqueTaskId('limits');
      const taskDir = await tasks.dir();
      const spec = {
        ...makeSpec({ command: ['sleep', '1000'], env: {} }),
        cpuMillis: 250,
        memoryBytes: 48 * mebibyte,
      };
      const handle = await driver.start({ taskId, spec, taskDir });
      tasks.track(driver, handle);
      expect(handle.warnings).toBeUndefined();
      const pid = await leaderPid(taskDir);
      // Waited for by name, not as "no longer /": a process may start outside the root (this sandbox puts
      // everything in a memory cgroup of its own), and the task joins its cgroups one after another.
      const taskCgroup = `/${cgroupParent}/${taskId}`;
      await waitUntil('the task joins its cgroups', async () =>
        v1Limits
          ? (await cgroupOf(pid, 'cpu')) === taskCgroup && (await cgroupOf(pid, 'memory')) === taskCgroup
          : (await cgroupOf(pid, null)) === taskCgroup,
      );
      if (v1Limits) {
        expect(await cgroupOf(pid, 'cpu')).toBe(taskCgroup);
        expect(await cgroupOf(pid, 'memory')).toBe(taskCgroup);
        expect((await readFile(join(cpuDir(taskId), 'cpu.cfs_quota_us'), 'utf8')).trim()).toBe('25000');
        expect((await readFile(join(cpuDir(taskId), 'cpu.cfs_period_us'), 'utf8')).trim()).toBe('100000');
        expect(Number(await readFile(join(memoryDir(taskId), 'memory.limit_in_bytes'), 'utf8'))).toBe(
          48 * mebibyte,
        );
      } else {
        expect((await readFile(join(cpuDir(taskId), 'cpu.max'), 'utf8')).trim()).toBe('25000 100000');
        expect(Number(await readFile(join(memoryDir(taskId), 'memory.max'), 'utf8'))).toBe(48 * mebibyte);
      }
      await driver.stop(handle, { graceMs: 2000 });
      await driver.destroy(handle);
      expect(await exists(cpuDir(taskId))).toBe(false);
      expect(await exists(memoryDir(taskId))).toBe(false);
    });

    it('reports a task that runs out of memory as OOM-killed', async () => {
      const driver = cgroupDriver();
      const spec = {
        ...makeSpec({
          // Builds a 50 MB shell variable in a task allowed 8 MiB.
          command: ['sh', '-c', 'x=$(head -c 50000000 /dev/zero | tr "\\0" a); echo ${#x}'],
          env: {},
        }),
        memoryBytes: 8 * mebibyte,
      };
      const handle = await driver.start({ taskId: uniqueTaskId('oom'), spec, taskDir: await tasks.dir() });
      tasks.track(driver, handle);
      expect(await driver.wait(handle)).toMatchObject({
        oomKilled: true,
        reason: 'OOM-killed',
        succeeded: false,
      });
    });

    it('stops a process that left the task process group, through the cgroup', async () => {
      const driver = cgroupDriver();
      const { handle, taskDir } = await tasks.start(driver, [
        'sh',
        '-c',
        // setsid: a new session and process group, out of reach of a signal to the task's group.
        'setsid sh -c \'echo "escaped $$"; exec sleep 1000\' & sleep 1000',
      ]);
      await waitForStdout(taskDir, 'escaped ');
      const escapedPid = Number(
        /escaped (\d+)/.exec((await readTaskLogs(taskDir)).stdout.toString('utf8'))?.[1],
      );
      expect(await alive(escapedPid)).toBe(true);
      const exit = driver.wait(handle);
      await driver.stop(handle, { graceMs: 2000 });
      expect((await exit).succeeded).toBe(false);
      await waitUntil('the escaped process is gone', async () => !(await alive(escapedPid)), 5000);
    });
  },
);

const v2Writable = isRoot && hostMounts.v2 !== null;

describe.skipIf(!v2Writable)(
  `exec driver tracking processes in a cgroup v2 hierarchy${v2Writable ? '' : ' (skipped: needs root and cgroup2)'}`,
  { timeout: taskTestTimeoutMs },
  () => {
    const tasks = createTaskTracker(makeSpec, 'v2');
    afterEach(() => tasks.cleanup());

    it('places the task in a v2 cgroup, kills all of it there, and reports limits v2 cannot enforce', async () => {
      // Only the v2 hierarchy, whatever controllers it lacks: how a pure v2 host without delegated
      // controllers looks, and on a hybrid host the one way to reach its v2 half.
      const mountPoint = hostMounts.v2!.mountPoint;
      const mounts: CgroupMounts = { v1: {}, v2: { mountPoint, controllers: [] } };
      const driver = makeDriver({ cgroupMounts: mounts, cgroupParent });
      const taskId = uniqueTaskId('v2');
      const taskDir = await tasks.dir();
      const handle = await driver.start({
        taskId,
        spec: makeSpec({
          command: ['sh', '-c', 'setsid sh -c \'echo "escaped $$"; exec sleep 1000\' & sleep 1000'],
          env: {},
        }),
        taskDir,
      });
      tasks.track(driver, handle);
      expect(handle.warnings).toEqual([
        expect.stringMatching(/^cpu limit not enforced: no cpu cgroup controller/) as unknown,
        expect.stringMatching(/^memory limit not enforced: no memory cgroup controller/) as unknown,
        expect.stringMatching(/^pids limit not enforced: no pids cgroup controller/) as unknown,
      ]);
      await waitForStdout(taskDir, 'escaped ');
      const escapedPid = Number(
        /escaped (\d+)/.exec((await readTaskLogs(taskDir)).stdout.toString('utf8'))?.[1],
      );
      expect(await cgroupOf(escapedPid, null)).toBe(`/${cgroupParent}/${taskId}`);
      const procs = await readFile(join(mountPoint, cgroupParent, taskId, 'cgroup.procs'), 'utf8');
      expect(procs.trim().split('\n').map(Number)).toContain(escapedPid);
      await driver.destroy(handle);
      expect(await alive(escapedPid)).toBe(false);
      expect(await exists(join(mountPoint, cgroupParent, taskId))).toBe(false);
    });
  },
);
