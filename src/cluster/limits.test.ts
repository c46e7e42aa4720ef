import { afterEach, describe, expect, it, vi } from 'vitest';
import { isShoalError } from '../shared/errors.ts';
import { gibibyte } from '../shared/units.ts';
import { decodeCommand, encodeCommand, type Command } from './command.ts';
import { nodeIdLabel, type JobSpec } from './job.ts';
import {
  liveTaskBytes,
  liveTasksMaxForMemory,
  liveTasksMaxMax,
  liveTasksRefusal,
  taskLimitsBefore,
  type TaskLimits,
} from './limits.ts';
import { ClusterState, instanceHistoryMax, type ApplyResult } from './state.ts';
import { isTerminal, type TaskSpec } from './task.ts';

const MiB = 1024 * 1024;
const hourMs = 60 * 60_000;
const spec: TaskSpec = {
  name: 't',
  driver: 'exec',
  command: ['true'],
  cpuMillis: 1,
  memoryBytes: MiB,
  priority: 50,
  env: {},
  constraints: {},
};
const limits = (changes: Partial<TaskLimits>): TaskLimits => ({ ...taskLimitsBefore, ...changes });

/** A state fed through the codec, as a node applies its log; one node n1 with room for many tasks. */
function cluster(): { state: ClusterState; apply: (command: Command) => ApplyResult } {
  const state = new ClusterState();
  let index = 0;
  const apply = (command: Command): ApplyResult =>
    state.apply(++index, decodeCommand(index, encodeCommand(command)));
  apply({
    type: 'upsertNode',
    node: {
      id: 'n1',
      name: 'n1',
      address: 'h:1',
      capacity: { cpuMillis: 100_000, memoryBytes: 100_000 * MiB },
      labels: { [nodeIdLabel]: 'n1' },
      drivers: ['exec'],
    },
    atMs: 0,
  });
  return { state, apply };
}

const id = (n: number): string => n.toString(16).padStart(12, '0');

/** Submits task `n` and ends it (killed while pending) at `atMs`. */
function endTask(apply: (command: Command) => ApplyResult, n: number, atMs: number): void {
  apply({ type: 'submitTask', id: id(n), spec, atMs });
  apply({ type: 'killTask', taskId: id(n), atMs });
}

/** n1's report that the first run of `taskId` failed with exit code 1. */
function failedOnN1(taskId: string, atMs: number): Command {
  return {
    type: 'reportTask',
    nodeId: 'n1',
    taskId,
    attempt: 0,
    state: 'failed',
    exitCode: 1,
    reason: 'exit code 1',
    atMs,
  };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('the default live-task limit', () => {
  it('is half the machine’s memory at the stated cost of a task', () => {
    expect(liveTaskBytes).toBe(2048);
    expect(liveTasksMaxForMemory(8 * gibibyte)).toBe(2_097_152);
    expect(liveTasksMaxForMemory(gibibyte)).toBe(262_144);
    expect(liveTasksMaxForMemory(0)).toBe(1);
    expect(liveTasksMaxForMemory(1024 * 1024 * gibibyte)).toBe(liveTasksMaxMax);
  });

  it('refuses in one line that says what to do', () => {
    const message = liveTasksRefusal(10, 2, limits({ liveTasksMax: 11 }));
    expect(message).not.toContain('\n');
    expect(message).toMatch(/^the cluster holds 10 live tasks and accepts at most 11, so not 2 more tasks: /);
    expect(message).toMatch(/shoal kill, shoal job stop/);
    expect(message).toMatch(/--live-tasks-max/);
  });
});

describe('replicated task limits', () => {
  it('a state and a log from before them hold the limits that held then', () => {
    expect(new ClusterState().taskLimits).toEqual(taskLimitsBefore);
    expect(taskLimitsBefore).toEqual({
      liveTasksMax: 200_000,
      terminalTasksRetainedMax: 10_000,
      terminalTaskRetentionMs: null,
    });
  });

  it('refuses submissions beyond the replicated live-task limit, all of a submission or none', () => {
    const { state, apply } = cluster();
    apply({ type: 'setTaskLimits', limits: limits({ liveTasksMax: 3 }), atMs: 1 });
    expect(apply({ type: 'submitTask', id: id(1), spec, atMs: 2 })).toEqual({ ok: true, taskId: id(1) });
    const refused = apply({
      type: 'submitTasks',
      tasks: [2, 3, 4].map((n) => ({ id: id(n), spec })),
      atMs: 3,
    });
    expect(refused).toEqual({
      ok: false,
      code: 'CONFLICT',
      message: liveTasksRefusal(1, 3, limits({ liveTasksMax: 3 })),
    });
    expect(state.liveTaskCount).toBe(1);
    expect(apply({ type: 'submitTasks', tasks: [2, 3].map((n) => ({ id: id(n), spec })), atMs: 4 })).toEqual({
      ok: true,
      taskId: id(2),
    });
    // A retried submission of an accepted id is still accepted: ids are idempotent, whatever the count.
    expect(apply({ type: 'submitTask', id: id(1), spec, atMs: 5 })).toEqual({ ok: true, taskId: id(1) });
    // An ended task makes room.
    apply({ type: 'killTask', taskId: id(1), atMs: 6 });
    expect(apply({ type: 'submitTask', id: id(5), spec, atMs: 7 }).ok).toBe(true);
  });

  it('bounds the instances a job starts by the same limit', () => {
    const { state, apply } = cluster();
    apply({ type: 'setTaskLimits', limits: limits({ liveTasksMax: 2 }), atMs: 1 });
    const job: JobSpec = {
      name: 'web',
      type: 'service',
      task: { driver: 'exec', command: ['sleep', '600'], cpuMillis: 1, memoryMiB: 1 },
      count: 5,
    };
    apply({ type: 'putJob', job, atMs: 2 });
    expect(state.jobTasks('default', 'web')).toHaveLength(2);
    apply({ type: 'setTaskLimits', limits: limits({ liveTasksMax: 10 }), atMs: 3 });
    apply({ type: 'putJob', job: { ...job, count: 4 }, atMs: 4 });
    expect(state.jobTasks('default', 'web').filter((task) => !isTerminal(task.state))).toHaveLength(4);
  });

  it('forgets the oldest ended plain tasks beyond the replicated count, at once when it is lowered', () => {
    const { state, apply } = cluster();
    for (let n = 1; n <= 6; n++) endTask(apply, n, n);
    expect([...state.tasks.keys()]).toHaveLength(6);
    apply({ type: 'setTaskLimits', limits: limits({ terminalTasksRetainedMax: 4 }), atMs: 10 });
    expect([...state.tasks.keys()]).toEqual([3, 4, 5, 6].map(id));
    endTask(apply, 7, 11);
    expect([...state.tasks.keys()]).toEqual([4, 5, 6, 7].map(id));
    apply({ type: 'setTaskLimits', limits: limits({ terminalTasksRetainedMax: 1 }), atMs: 12 });
    expect([...state.tasks.keys()]).toEqual([id(7)]);
    // The task a command ends is kept through that command, so its end is seen; the one before goes.
    endTask(apply, 8, 13);
    expect([...state.tasks.keys()]).toEqual([id(8)]);
  });

  it('forgets ended plain tasks by age, by the times of committed commands', () => {
    const { state, apply } = cluster();
    apply({ type: 'setTaskLimits', limits: limits({ terminalTaskRetentionMs: hourMs }), atMs: 0 });
    endTask(apply, 1, 1000);
    endTask(apply, 2, 2000);
    apply({ type: 'submitTask', id: id(3), spec, atMs: 3000 });
    // More than one hour after the first ended, by a later command's time: it is forgotten, the second not.
    apply({ type: 'drainNode', nodeId: 'n1', drain: false, atMs: 1000 + hourMs });
    expect(state.tasks.has(id(1))).toBe(true);
    apply({ type: 'drainNode', nodeId: 'n1', drain: false, atMs: 1000 + hourMs + 1 });
    expect([...state.tasks.keys()]).toEqual([2, 3].map(id));
    // A live task is never forgotten, however old.
    apply({ type: 'drainNode', nodeId: 'n1', drain: false, atMs: 100 * hourMs });
    expect([...state.tasks.keys()]).toEqual([id(3)]);
  });

  it('never ages tasks by the clock of the node that applies', () => {
    vi.useFakeTimers({ now: 1000 * hourMs });
    const { state, apply } = cluster();
    apply({ type: 'setTaskLimits', limits: limits({ terminalTaskRetentionMs: hourMs }), atMs: 0 });
    endTask(apply, 1, 1000);
    apply({ type: 'drainNode', nodeId: 'n1', drain: false, atMs: 2000 });
    expect(state.tasks.has(id(1))).toBe(true);
  });

  it('keeps a job’s ended instances by their own rule, whatever their age', () => {
    const { state, apply } = cluster();
    apply({ type: 'setTaskLimits', limits: limits({ terminalTaskRetentionMs: 1 }), atMs: 0 });
    const job: JobSpec = {
      name: 'crunch',
      type: 'batch',
      task: {
        driver: 'exec',
        command: ['false'],
        cpuMillis: 1,
        memoryMiB: 1,
        restart: { policy: 'never', maxRestarts: 0, delayMs: 0 },
      },
      count: 1,
    };
    apply({ type: 'putJob', job, atMs: 1 });
    // The instance fails again and again; each end is replaced by the job's reconciliation.
    for (let run = 0; run < instanceHistoryMax + 3; run++) {
      const task = state.pendingTasks()[0];
      if (task === undefined) break;
      apply({
        type: 'assignTasks',
        term: 1,
        assignments: [{ taskId: task.id, nodeId: 'n1' }],
        waiting: [],
        atMs: 2,
      });
      apply(failedOnN1(task.id, 3 + run * hourMs));
    }
    const ended = state.jobTasks('default', 'crunch').filter((task) => isTerminal(task.state));
    expect(ended.length).toBeGreaterThan(0);
    expect(ended.length).toBeLessThanOrEqual(instanceHistoryMax);
    // A plain task ended as long ago is gone.
    endTask(apply, 1, 4);
    apply({ type: 'drainNode', nodeId: 'n1', drain: false, atMs: 100 * hourMs });
    expect(state.tasks.has(id(1))).toBe(false);
    expect(state.jobTasks('default', 'crunch').filter((task) => isTerminal(task.state))).toEqual(ended);
  });

  it('keeps the newest ended tasks of each instance slot, on a node restored from a snapshot alike', () => {
    const { state } = cluster();
    let restored: ClusterState | null = null;
    // Both apply each entry at the same index: instance task ids derive from it.
    let index = 100;
    const apply = (command: Command): void => {
      index++;
      for (const node of restored === null ? [state] : [state, restored])
        node.apply(index, decodeCommand(index, encodeCommand(command)));
    };
    const job: JobSpec = {
      name: 'web',
      type: 'service',
      task: { driver: 'exec', command: ['false'], cpuMillis: 1, memoryMiB: 1 },
      count: 2,
      reschedule: { policy: 'always', attempts: null, delayMs: 100 },
    };
    apply({ type: 'putJob', job, atMs: 1 });
    const runs = instanceHistoryMax + 8;
    for (let run = 0; run < runs; run++) {
      // Halfway, a node restores the snapshot (its index of ended tasks is built afresh) and applies the
      // rest of the log as the first one does.
      if (run === Math.floor(runs / 2)) {
        restored = new ClusterState();
        restored.restore(state.toSnapshot());
      }
      const atMs = (run + 1) * hourMs;
      const pending = state.pendingTasks();
      expect(pending).toHaveLength(2);
      apply({
        type: 'assignTasks',
        term: 1,
        assignments: pending.map((task) => ({ taskId: task.id, nodeId: 'n1' })),
        waiting: [],
        atMs,
      });
      for (const task of pending) {
        apply(failedOnN1(task.id, atMs + 1));
      }
    }
    expect(restored).not.toBeNull();
    for (const node of [state, restored ?? state]) {
      const ended = node.jobTasks('default', 'web').filter((task) => isTerminal(task.state));
      for (const slot of [0, 1]) {
        const mine = ended.filter((task) => task.instance?.slot === slot);
        expect(mine).toHaveLength(instanceHistoryMax);
        // The newest: those of the last instanceHistoryMax runs.
        const oldestKeptMs = (runs - instanceHistoryMax + 1) * hourMs + 1;
        expect(Math.min(...mine.map((task) => task.updatedAtMs))).toBe(oldestKeptMs);
      }
    }
    expect([...(restored?.tasks.keys() ?? [])].sort()).toEqual([...state.tasks.keys()].sort());
  });

  it('every node that applies the same log keeps the same tasks', () => {
    const log: Command[] = [
      {
        type: 'setTaskLimits',
        limits: limits({ terminalTasksRetainedMax: 50, terminalTaskRetentionMs: 5000 }),
        atMs: 0,
      },
    ];
    for (let n = 1; n <= 400; n++) {
      log.push({ type: 'submitTask', id: id(n), spec, atMs: n * 100 });
      // Proposers' clocks differ: some ends carry an earlier time than the one before.
      log.push({ type: 'killTask', taskId: id(n), atMs: 1000 + n * 100 - (n % 3) * 250 });
    }
    const states = [cluster(), cluster()].map(({ state, apply }) => {
      for (const command of log) apply(command);
      return state;
    });
    expect(states[1]?.toSnapshot()).toBe(states[0]?.toSnapshot());
    // Ended 5 s before the last command at most, and 50 of them at most.
    const kept = [...(states[0]?.tasks.values() ?? [])];
    expect(kept.length).toBeGreaterThan(0);
    expect(kept.length).toBeLessThanOrEqual(50);
    expect(Math.min(...kept.map((task) => task.updatedAtMs))).toBeGreaterThanOrEqual(
      1000 + 400 * 100 - 5000 - 500,
    );
  });

  it('a snapshot keeps the limits and the order ended tasks are forgotten in; an older one restores', () => {
    const { state, apply } = cluster();
    apply({ type: 'setTaskLimits', limits: limits({ terminalTasksRetainedMax: 1500 }), atMs: 0 });
    for (let n = 1; n <= 3000; n++) endTask(apply, n, n);
    const copy = new ClusterState();
    copy.restore(state.toSnapshot());
    expect(copy.toSnapshot()).toBe(state.toSnapshot());
    expect(copy.taskLimits).toEqual(state.taskLimits);
    // Both forget the same task next.
    const next = (target: ClusterState): string[] => {
      target.apply(target.appliedIndex + 1, { type: 'submitTask', id: id(9000), spec, atMs: 9000 });
      target.apply(target.appliedIndex + 1, { type: 'killTask', taskId: id(9000), atMs: 9000 });
      return [...target.tasks.keys()].slice(0, 2);
    };
    expect(next(copy)).toEqual(next(state));
    // A snapshot from before replicated limits restores under the limits that held then.
    const old = JSON.parse(state.toSnapshot()) as Record<string, unknown>;
    delete old.taskLimits;
    const older = new ClusterState();
    older.restore(JSON.stringify(old));
    expect(older.taskLimits).toEqual(taskLimitsBefore);
    expect(older.tasks.size).toBe(state.tasks.size);
  });

  it('refuses a snapshot whose limits do not decode, leaving the state as it was', () => {
    const { state, apply } = cluster();
    apply({ type: 'submitTask', id: id(1), spec, atMs: 1 });
    const before = state.toSnapshot();
    const bad = { ...(JSON.parse(before) as Record<string, unknown>), taskLimits: { liveTasksMax: -1 } };
    let error: unknown = null;
    try {
      state.restore(JSON.stringify(bad));
    } catch (caught) {
      error = caught;
    }
    expect(isShoalError(error, 'CORRUPT_DATA')).toBe(true);
    expect(state.toSnapshot()).toBe(before);
  });
});
