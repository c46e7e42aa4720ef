import { describe, expect, it } from 'vitest';
import { ClusterState } from './state.ts';
import type { Command, TaskReportRecord } from './command.ts';
import { taskEventsMax, type TaskSpec } from './task.ts';

const MiB = 1024 * 1024;
const spec = (cpuMillis = 500, memoryMiB = 64): TaskSpec => ({
  name: 't',
  driver: 'exec',
  command: ['true'],
  cpuMillis,
  memoryBytes: memoryMiB * MiB,
  priority: 50,
  env: {},
  constraints: {},
});

function cluster(): { state: ClusterState; apply: (c: Command) => ReturnType<ClusterState['apply']> } {
  const state = new ClusterState();
  let index = 0;
  const apply = (c: Command): ReturnType<ClusterState['apply']> => state.apply(++index, c);
  apply({
    type: 'upsertNode',
    node: {
      id: 'n1',
      name: 'one',
      address: 'h:1',
      capacity: { cpuMillis: 1000, memoryBytes: 256 * MiB },
      labels: {},
      drivers: ['exec'],
    },
    atMs: 0,
  });
  return { state, apply };
}

describe('ClusterState', () => {
  it('takes a task from submission through assignment to its exit, freeing its resources', () => {
    const { state, apply } = cluster();
    apply({ type: 'submitTask', id: 'a', spec: spec(), atMs: 1 });
    expect(state.pendingTasks().map((t) => t.id)).toEqual(['a']);
    apply({
      type: 'assignTasks',
      term: 2,
      assignments: [{ taskId: 'a', nodeId: 'n1' }],
      waiting: [],
      atMs: 2,
    });
    expect(state.tasks.get('a')).toMatchObject({ state: 'assigned', nodeId: 'n1' });
    expect(state.freeOn('n1')).toMatchObject({ cpuMillis: 500, memoryBytes: 192 * MiB });
    apply({
      type: 'reportTask',
      attempt: 0,
      nodeId: 'n1',
      taskId: 'a',
      state: 'running',
      exitCode: null,
      reason: null,
      atMs: 3,
    });
    apply({
      type: 'reportTask',
      attempt: 0,
      nodeId: 'n1',
      taskId: 'a',
      state: 'finished',
      exitCode: 0,
      reason: 'exit code 0',
      atMs: 4,
    });
    expect(state.tasks.get('a')).toMatchObject({ state: 'finished', exitCode: 0 });
    expect(state.freeOn('n1')).toMatchObject({ cpuMillis: 1000, memoryBytes: 256 * MiB });
  });

  it('is idempotent for a resubmitted id and ignores reports that go backwards or come from another node', () => {
    const { state, apply } = cluster();
    apply({ type: 'submitTask', id: 'a', spec: spec(), atMs: 1 });
    expect(apply({ type: 'submitTask', id: 'a', spec: spec(900), atMs: 2 })).toEqual({
      ok: true,
      taskId: 'a',
    });
    expect(state.tasks.get('a')?.spec.cpuMillis).toBe(500);
    apply({
      type: 'assignTasks',
      term: 2,
      assignments: [{ taskId: 'a', nodeId: 'n1' }],
      waiting: [],
      atMs: 2,
    });
    apply({
      type: 'reportTask',
      attempt: 0,
      nodeId: 'n1',
      taskId: 'a',
      state: 'running',
      exitCode: null,
      reason: null,
      atMs: 3,
    });
    apply({
      type: 'reportTask',
      attempt: 0,
      nodeId: 'n1',
      taskId: 'a',
      state: 'starting',
      exitCode: null,
      reason: null,
      atMs: 4,
    });
    apply({
      type: 'reportTask',
      attempt: 0,
      nodeId: 'n2',
      taskId: 'a',
      state: 'failed',
      exitCode: 1,
      reason: null,
      atMs: 5,
    });
    expect(state.tasks.get('a')?.state).toBe('running');
  });

  it('re-checks a stale plan: a placement that no longer fits is skipped', () => {
    const { state, apply } = cluster();
    apply({ type: 'submitTask', id: 'a', spec: spec(800), atMs: 1 });
    apply({ type: 'submitTask', id: 'b', spec: spec(800), atMs: 1 });
    apply({
      type: 'assignTasks',
      term: 2,
      assignments: [
        { taskId: 'a', nodeId: 'n1' },
        { taskId: 'b', nodeId: 'n1' },
      ],
      waiting: [],
      atMs: 2,
    });
    expect(state.tasks.get('b')?.state).toBe('pending');
    expect(state.freeOn('n1').cpuMillis).toBe(200);
  });

  it('places a task lost with its node again elsewhere by default, whatever its restart policy', () => {
    const { state, apply } = cluster();
    apply({ type: 'submitTask', id: 'a', spec: spec(), atMs: 1 });
    apply({
      type: 'assignTasks',
      term: 2,
      assignments: [{ taskId: 'a', nodeId: 'n1' }],
      waiting: [],
      atMs: 2,
    });
    apply({ type: 'nodeDown', nodeId: 'n1', reason: 'node one unreachable', atMs: 4 });
    expect(state.tasks.get('a')).toMatchObject({
      state: 'pending',
      attempt: 1,
      nodeId: null,
      reason: 'lost (node one unreachable); placed again elsewhere',
    });
    expect(state.pendingTasks().map((task) => task.id)).toEqual(['a']);
  });

  it('kills pending tasks at once and marks tasks on a dead node lost (reschedule never)', () => {
    const { state, apply } = cluster();
    apply({ type: 'submitTask', id: 'a', spec: { ...spec(), reschedule: 'never' }, atMs: 1 });
    apply({ type: 'submitTask', id: 'b', spec: spec(), atMs: 1 });
    apply({
      type: 'assignTasks',
      term: 2,
      assignments: [{ taskId: 'a', nodeId: 'n1' }],
      waiting: [],
      atMs: 2,
    });
    apply({ type: 'killTask', taskId: 'b', atMs: 3 });
    expect(state.tasks.get('b')?.state).toBe('killed');
    apply({ type: 'nodeDown', nodeId: 'n1', reason: 'node one unreachable', atMs: 4 });
    expect(state.tasks.get('a')).toMatchObject({ state: 'lost', reason: 'node one unreachable' });
    expect(apply({ type: 'killTask', taskId: 'zzz', atMs: 5 })).toMatchObject({
      ok: false,
      code: 'NOT_FOUND',
    });
  });

  it('a snapshot restores the same state, derived indexes included', () => {
    const { state, apply } = cluster();
    apply({ type: 'submitTask', id: 'a', spec: spec(), atMs: 1 });
    apply({ type: 'submitTask', id: 'b', spec: spec(), atMs: 1 });
    apply({ type: 'submitTask', id: 'c', spec: spec(), atMs: 1 });
    apply({
      type: 'assignTasks',
      term: 2,
      assignments: [{ taskId: 'a', nodeId: 'n1' }],
      waiting: [],
      atMs: 2,
    });
    apply({ type: 'killTask', taskId: 'c', atMs: 3 });
    const copy = new ClusterState();
    copy.restore(state.toSnapshot());
    expect(copy.toSnapshot()).toBe(state.toSnapshot());
    expect(copy.freeOn('n1')).toEqual(state.freeOn('n1'));
    expect(copy.pendingTasks().map((t) => t.id)).toEqual(['b']);
    expect(copy.appliedIndex).toBe(state.appliedIndex);
  });

  it('restarts a failed task under on-failure with doubling backoff, up to its limit, then it stays failed', () => {
    const { state, apply } = cluster();
    const restart = { policy: 'on-failure' as const, maxRestarts: 2, delayMs: 1000 };
    apply({ type: 'submitTask', id: 'a', spec: { ...spec(), restart }, atMs: 0 });
    const runAndFail = (attempt: number, atMs: number): void => {
      apply({
        type: 'assignTasks',
        term: 2,
        assignments: [{ taskId: 'a', nodeId: 'n1' }],
        waiting: [],
        atMs,
      });
      apply({
        type: 'reportTask',
        attempt,
        nodeId: 'n1',
        taskId: 'a',
        state: 'failed',
        exitCode: 3,
        reason: 'exit code 3',
        atMs,
      });
    };
    runAndFail(0, 10);
    expect(state.tasks.get('a')).toMatchObject({
      state: 'pending',
      attempt: 1,
      notBeforeMs: 1010,
      nodeId: null,
    });
    expect(state.tasks.get('a')?.reason).toBe('failed (exit code 3); restart 1 in 1 s');
    expect(state.freeOn('n1').cpuMillis).toBe(1000);
    // A late report about the first run changes nothing.
    apply({
      type: 'reportTask',
      attempt: 0,
      nodeId: 'n1',
      taskId: 'a',
      state: 'failed',
      exitCode: 3,
      reason: null,
      atMs: 11,
    });
    expect(state.tasks.get('a')?.attempt).toBe(1);
    runAndFail(1, 2000);
    expect(state.tasks.get('a')).toMatchObject({ state: 'pending', attempt: 2, notBeforeMs: 4000 });
    runAndFail(2, 5000);
    expect(state.tasks.get('a')).toMatchObject({ state: 'failed', attempt: 2, exitCode: 3 });
  });

  it('restarts lost tasks under always, but never a killed one', () => {
    const { state, apply } = cluster();
    apply({
      type: 'submitTask',
      id: 'a',
      spec: { ...spec(), restart: { policy: 'always', maxRestarts: null, delayMs: 0 } },
      atMs: 0,
    });
    apply({
      type: 'assignTasks',
      term: 2,
      assignments: [{ taskId: 'a', nodeId: 'n1' }],
      waiting: [],
      atMs: 1,
    });
    apply({ type: 'nodeDown', nodeId: 'n1', reason: 'node one unreachable', atMs: 2 });
    expect(state.tasks.get('a')).toMatchObject({ state: 'pending', attempt: 1 });
    apply({ type: 'killTask', taskId: 'a', atMs: 3 });
    expect(state.tasks.get('a')?.state).toBe('killed');
  });

  it('drains a node: no new placements there, and its live tasks are queued again once stopped', () => {
    const { state, apply } = cluster();
    apply({ type: 'submitTask', id: 'a', spec: spec(), atMs: 0 });
    apply({
      type: 'assignTasks',
      term: 2,
      assignments: [{ taskId: 'a', nodeId: 'n1' }],
      waiting: [],
      atMs: 1,
    });
    apply({ type: 'drainNode', nodeId: 'n1', drain: true, atMs: 2 });
    expect(state.tasks.get('a')).toMatchObject({ desired: 'move', state: 'assigned' });
    apply({
      type: 'reportTask',
      attempt: 0,
      nodeId: 'n1',
      taskId: 'a',
      state: 'killed',
      exitCode: 137,
      reason: 'killed by request',
      atMs: 3,
    });
    expect(state.tasks.get('a')).toMatchObject({
      desired: 'run',
      state: 'pending',
      attempt: 1,
      reason: 'moved off one',
    });
    apply({
      type: 'assignTasks',
      term: 2,
      assignments: [{ taskId: 'a', nodeId: 'n1' }],
      waiting: [],
      atMs: 4,
    });
    expect(state.tasks.get('a')?.state).toBe('pending');
    apply({ type: 'drainNode', nodeId: 'n1', drain: false, atMs: 5 });
    apply({
      type: 'assignTasks',
      term: 2,
      assignments: [{ taskId: 'a', nodeId: 'n1' }],
      waiting: [],
      atMs: 6,
    });
    expect(state.tasks.get('a')?.state).toBe('assigned');
  });

  it('keeps a bounded, time-ordered event history per task, fed by commands and by its node only', () => {
    const { state, apply } = cluster();
    apply({
      type: 'submitTask',
      id: 'a',
      spec: { ...spec(), restart: { policy: 'on-failure', maxRestarts: 1, delayMs: 100 } },
      atMs: 1,
    });
    apply({
      type: 'assignTasks',
      term: 1,
      assignments: [{ taskId: 'a', nodeId: 'n1' }],
      waiting: [],
      atMs: 2,
    });
    // The agent's clock may put an event before a commit it followed: it is filed by time.
    apply({
      type: 'taskEvents',
      nodeId: 'n1',
      taskId: 'a',
      attempt: 0,
      events: [{ atMs: 3, message: 'pulling image x' }],
    });
    apply({
      type: 'reportTask',
      attempt: 0,
      nodeId: 'n1',
      taskId: 'a',
      state: 'running',
      exitCode: null,
      reason: null,
      atMs: 4,
    });
    apply({
      type: 'taskEvents',
      nodeId: 'n1',
      taskId: 'a',
      attempt: 0,
      events: [{ atMs: 3.5, message: 'pulled image x' }],
    });
    // Another node, or a batch about an earlier attempt, does not speak for the task.
    apply({
      type: 'taskEvents',
      nodeId: 'n2',
      taskId: 'a',
      attempt: 0,
      events: [{ atMs: 5, message: 'stray' }],
    });
    apply({
      type: 'reportTask',
      attempt: 0,
      nodeId: 'n1',
      taskId: 'a',
      state: 'failed',
      exitCode: 3,
      reason: 'exit code 3',
      atMs: 6,
    });
    apply({
      type: 'taskEvents',
      nodeId: 'n1',
      taskId: 'a',
      attempt: 0,
      events: [{ atMs: 7, message: 'late' }],
    });
    expect(state.tasks.get('a')?.events.map((e) => e.message)).toEqual([
      'assigned to one',
      'pulling image x',
      'pulled image x',
      'running',
      'failed: exit code 3',
      'restart 1 scheduled in 0.1 s',
    ]);
    for (let i = 0; i < taskEventsMax + 5; i++) {
      apply({
        type: 'assignTasks',
        term: 1,
        assignments: [],
        waiting: [{ taskId: 'a', reason: `r${i}` }],
        atMs: 10 + i,
      });
    }
    const events = state.tasks.get('a')?.events ?? [];
    expect(events).toHaveLength(taskEventsMax);
    expect(events.at(-1)?.message).toBe(`waiting: r${taskEventsMax + 4}`);
  });

  it('restores a snapshot written before task events with an empty history', () => {
    const { state, apply } = cluster();
    apply({ type: 'submitTask', id: 'a', spec: spec(), atMs: 1 });
    const old = JSON.parse(state.toSnapshot()) as { tasks: Record<string, unknown>[] };
    for (const task of old.tasks) delete task['events'];
    const copy = new ClusterState();
    copy.restore(JSON.stringify(old));
    expect(copy.tasks.get('a')?.events).toEqual([]);
    copy.apply(state.appliedIndex + 1, { type: 'killTask', taskId: 'a', atMs: 2 });
    expect(copy.tasks.get('a')?.events.map((e) => e.message)).toEqual([
      'kill requested',
      'killed: killed before it was placed',
    ]);
  });
});

describe('reportTasks', () => {
  /** A random mix of reports: forward, backward, stale attempts, another node, unknown tasks, repeats. */
  function randomReports(seed: number, ids: readonly string[]): TaskReportRecord[] {
    let x = seed;
    const next = (n: number): number => {
      x = (Math.imul(x, 1_103_515_245) + 12_345) >>> 0;
      return x % n;
    };
    const states = ['starting', 'running', 'finished', 'failed', 'killed', 'lost'] as const;
    const reports: TaskReportRecord[] = [];
    for (let i = 0; i < 40; i++) {
      const state = states[next(states.length)] ?? 'running';
      reports.push({
        taskId: next(8) === 0 ? 'unknown' : (ids[next(ids.length)] ?? 'a'),
        attempt: next(5) === 0 ? 1 : 0,
        state,
        exitCode: state === 'failed' ? 3 : null,
        reason: state === 'failed' ? 'exit code 3' : null,
      });
    }
    return reports;
  }

  /** Two nodes, tasks of several restart policies placed on them. */
  function placed(): { state: ClusterState; apply: (c: Command) => ReturnType<ClusterState['apply']> } {
    const made = cluster();
    made.apply({
      type: 'upsertNode',
      node: {
        id: 'n2',
        name: 'two',
        address: 'h:2',
        capacity: { cpuMillis: 1000, memoryBytes: 256 * MiB },
        labels: {},
        drivers: ['exec'],
      },
      atMs: 0,
    });
    const restart = { policy: 'on-failure' as const, maxRestarts: 3, delayMs: 1000 };
    made.apply({
      type: 'submitTasks',
      tasks: ['a', 'b', 'c', 'd'].map((id, at) => ({
        id,
        spec: { ...spec(100, 16), ...(at % 2 === 0 ? { restart } : {}) },
      })),
      atMs: 1,
    });
    made.apply({
      type: 'assignTasks',
      term: 1,
      assignments: [
        { taskId: 'a', nodeId: 'n1' },
        { taskId: 'b', nodeId: 'n1' },
        { taskId: 'c', nodeId: 'n1' },
        { taskId: 'd', nodeId: 'n2' },
      ],
      waiting: [],
      atMs: 2,
    });
    return made;
  }

  it('applies as the same reports one entry each would, in order, with each one’s own result', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const reports = randomReports(seed, ['a', 'b', 'c', 'd']);
      const one = placed();
      const singles = reports.map((report) =>
        one.apply({ type: 'reportTask', nodeId: 'n1', ...report, atMs: 3 }),
      );
      const batched = placed();
      const result = batched.apply({ type: 'reportTasks', nodeId: 'n1', reports, atMs: 3 });
      expect(result).toEqual({ ok: true, results: singles });
      const tasks = (state: ClusterState): unknown => [...state.tasks.values()];
      expect(tasks(batched.state)).toEqual(tasks(one.state));
      expect(batched.state.freeOn('n1')).toEqual(one.state.freeOn('n1'));
      expect(batched.state.pendingTasks().map((task) => task.id)).toEqual(
        one.state.pendingTasks().map((task) => task.id),
      );
    }
  });

  it('answers a report about a task the cluster does not hold NOT_FOUND, and applies the others', () => {
    const { state, apply } = placed();
    const result = apply({
      type: 'reportTasks',
      nodeId: 'n1',
      reports: [
        { taskId: 'a', attempt: 0, state: 'running', exitCode: null, reason: null },
        { taskId: 'gone', attempt: 0, state: 'finished', exitCode: 0, reason: null },
        { taskId: 'b', attempt: 0, state: 'finished', exitCode: 0, reason: 'exit code 0' },
      ],
      atMs: 3,
    });
    expect(result).toEqual({
      ok: true,
      results: [{ ok: true }, { ok: false, code: 'NOT_FOUND', message: 'no task gone' }, { ok: true }],
    });
    expect(state.tasks.get('a')?.state).toBe('running');
    expect(state.tasks.get('b')).toMatchObject({ state: 'finished', exitCode: 0, updatedAtMs: 3 });
  });
});
