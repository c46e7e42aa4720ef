/**
 * The agent's garbage collection: what tasks the log no longer assigns to the node left behind is freed
 * (containers, processes and cgroups, old task directories); live tasks are never touched. A fake driver shows
 * the rules; the real exec driver shows an orphaned process tree is killed.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Task, TaskSpec, TaskState } from '../../src/cluster/task.ts';
import { Agent, taskDirRetentionMsDefault } from '../../src/runtime/agent.ts';
import { createExecDriver, type Driver } from '../../src/runtime/drivers/index.ts';
import { runtimeDirName, taskFileName } from '../../src/runtime/drivers/shim.ts';
import { silentLogger } from '../../src/shared/index.ts';
import { uniqueTaskId, waitUntil } from '../drivers/compliance.ts';

const spec: TaskSpec = {
  name: 'gc',
  driver: 'exec',
  command: ['sleep', '300'],
  cpuMillis: 100,
  memoryBytes: 64 * 1024 * 1024,
  priority: 50,
  env: {},
  constraints: {},
};

function task(id: string, state: TaskState, nodeId: string | null, updatedAtMs: number): Task {
  return {
    id,
    spec,
    submitIndex: 1,
    submittedAtMs: 0,
    desired: 'run',
    state,
    nodeId,
    attempt: 0,
    notBeforeMs: null,
    exitCode: null,
    reason: null,
    updatedAtMs,
    events: [],
  };
}

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function agentWith(tasks: Task[], driver: Driver, nowMs: number): Agent {
  const dataDir = mkdtempSync(join(tmpdir(), 'shoal-gc-test-'));
  dirs.push(dataDir);
  const byId = new Map(tasks.map((t) => [t.id, t]));
  return new Agent({
    nodeId: 'me',
    dataDir,
    drivers: new Map([['exec', driver]]),
    logger: silentLogger,
    assignedTasks: () =>
      tasks.filter((t) => t.nodeId === 'me' && !['finished', 'failed', 'killed', 'lost'].includes(t.state)),
    task: (id) => byId.get(id),
    report: () => Promise.resolve(),
    leaseExpired: () => false,
    leaseReason: 'lease',
    lease: { file: join(dataDir, 'lease.json'), durationMs: 10_000 },
    nowMs: () => nowMs,
  });
}

describe('garbage collection', () => {
  it('frees leftovers of tasks not assigned here and removes old directories, never a live task', async () => {
    const nowMs = Date.now();
    const day = taskDirRetentionMsDefault;
    const tasks = [
      task('live', 'running', 'me', nowMs - 2 * day),
      task('ended-long-ago', 'finished', 'me', nowMs - 2 * day),
      task('ended-recently', 'failed', 'me', nowMs - 1000),
      task('elsewhere', 'running', 'other', nowMs - 2 * day),
    ];
    const collected: string[] = [];
    // The engine still holds containers of every one of them, and of one the cluster has forgotten.
    const leftovers = ['live', 'ended-long-ago', 'ended-recently', 'elsewhere', 'forgotten'];
    const driver: Driver = {
      name: 'exec',
      health: () => Promise.resolve({ healthy: true, detail: '' }),
      start: () => Promise.reject(new Error('not used')),
      wait: () => Promise.reject(new Error('not used')),
      stop: () => Promise.resolve(),
      destroy: () => Promise.resolve(),
      recover: () => Promise.resolve(false),
      leftovers: () => Promise.resolve(leftovers),
      collect: ({ taskId }) => {
        collected.push(taskId);
        return Promise.resolve(true);
      },
    };
    const agent = agentWith(tasks, driver, nowMs);
    for (const id of [...leftovers, 'forgotten-new']) mkdirSync(agent.taskDir(id), { recursive: true });
    const old = (nowMs - 2 * day) / 1000;
    utimesSync(agent.taskDir('forgotten'), old, old);

    const report = await agent.collectGarbage();

    expect(collected.sort()).toEqual([
      'elsewhere',
      'ended-long-ago',
      'ended-recently',
      'forgotten',
      'forgotten-new',
    ]);
    expect(report.removedDirs.sort()).toEqual(['ended-long-ago', 'forgotten']);
    for (const kept of ['live', 'ended-recently', 'elsewhere', 'forgotten-new'])
      expect(existsSync(agent.taskDir(kept)), kept).toBe(true);
  });

  it('kills the process tree of an exec task whose handle was lost and that the log does not assign here', async () => {
    const driver = createExecDriver({ logger: silentLogger, cgroupMounts: null });
    const id = uniqueTaskId('gc');
    const marker = `shoal-gc-${id}`;
    const agent = agentWith([], driver, Date.now());
    const taskDir = agent.taskDir(id);
    mkdirSync(taskDir, { recursive: true });
    // Started by an earlier agent process whose handles.json is gone: this agent knows only the directory.
    const started = createExecDriver({ logger: silentLogger, cgroupMounts: null });
    await started.start({
      taskId: id,
      spec: { ...spec, command: ['sh', '-c', `sleep 300; echo ${marker}`] },
      taskDir,
    });
    const running = (): boolean => {
      try {
        return (
          execFileSync('pgrep', ['-f', `echo ${marker}`])
            .toString()
            .trim() !== ''
        );
      } catch {
        return false;
      }
    };
    await waitUntil('the task to run', () => Promise.resolve(running()));
    // An orphan of an earlier agent had its shim's record written long ago; here the shim may still be
    // writing it when the process shows up, and without cgroups (none in this test) the record is the only
    // way to find the task.
    await waitUntil('the shim to record the task', () =>
      Promise.resolve(existsSync(join(taskDir, runtimeDirName, taskFileName))),
    );
    const report = await agent.collectGarbage();
    expect(report.collected).toEqual([id]);
    await waitUntil('the task to be gone', () => Promise.resolve(!running()));
    // Its logs stay until the directory is old.
    expect(existsSync(taskDir)).toBe(true);
  }, 60_000);
});
