/**
 * Frameworks in the replicated state: their durable commands, launches placed where their offers were
 * (all or nothing, re-checked against the nodes), their tasks' states heard as updates, and the registry in
 * snapshots.
 */
import { describe, expect, it } from 'vitest';
import { ClusterState } from './state.ts';
import type { Command } from './command.ts';
import type { TaskSpec } from './task.ts';

const MiB = 1024 * 1024;
const spec = (cpuMillis = 500, memoryMiB = 64): TaskSpec => ({
  name: 'fw-task',
  driver: 'exec',
  command: ['true'],
  cpuMillis,
  memoryBytes: memoryMiB * MiB,
  priority: 50,
  env: {},
  constraints: {},
});

const info = {
  name: 'batch',
  role: 'batch',
  user: 'nobody',
  priority: 50,
  failoverTimeoutMs: 60_000,
  partitionAware: false,
};

function cluster(): { state: ClusterState; apply: (c: Command) => ReturnType<ClusterState['apply']> } {
  const state = new ClusterState();
  let index = 0;
  const apply = (c: Command): ReturnType<ClusterState['apply']> => state.apply(++index, c);
  for (const id of ['n1', 'n2'])
    apply({
      type: 'upsertNode',
      node: {
        id,
        name: id,
        address: 'h:1',
        capacity: { cpuMillis: 1000, memoryBytes: 256 * MiB },
        labels: {},
        drivers: ['exec'],
      },
      atMs: 0,
    });
  apply({
    type: 'subscribeFramework',
    frameworkId: 'fw-1',
    resubscribe: false,
    streamId: 's1',
    info,
    atMs: 1,
  });
  return { state, apply };
}

const report = (taskId: string, nodeId: string, state: 'running' | 'finished', atMs: number): Command => ({
  type: 'reportTask',
  attempt: 0,
  nodeId,
  taskId,
  state,
  exitCode: state === 'finished' ? 0 : null,
  reason: state === 'finished' ? 'exit code 0' : null,
  atMs,
});

describe('frameworks in the cluster state', () => {
  it("launches an accept's tasks assigned to their nodes, in the framework's role, and never restarted by the cluster", () => {
    const { state, apply } = cluster();
    expect(
      apply({
        type: 'launchFrameworkTasks',
        frameworkId: 'fw-1',
        tasks: [
          { id: 'c1', frameworkTaskId: 'job-1', nodeId: 'n1', spec: spec() },
          { id: 'c2', frameworkTaskId: 'job-2', nodeId: 'n2', spec: spec() },
        ],
        atMs: 2,
      }),
    ).toEqual({ ok: true, taskId: 'c1' });
    expect(state.tasks.get('c1')).toMatchObject({
      state: 'assigned',
      nodeId: 'n1',
      framework: { id: 'fw-1', taskId: 'job-1', name: 'batch' },
      spec: { namespace: 'batch', restart: { policy: 'never' }, reschedule: 'never' },
    });
    expect(state.pendingTasks()).toEqual([]);
    expect(state.freeOn('n1').cpuMillis).toBe(500);
    expect(state.frameworks.get('fw-1')?.taskCount).toBe(2);
  });

  it('refuses the whole launch when its tasks no longer fit together, or an id is taken, creating nothing', () => {
    const { state, apply } = cluster();
    const tooMuch = apply({
      type: 'launchFrameworkTasks',
      frameworkId: 'fw-1',
      tasks: [
        { id: 'c1', frameworkTaskId: 'a', nodeId: 'n2', spec: spec(200) },
        { id: 'c2', frameworkTaskId: 'b', nodeId: 'n1', spec: spec(600) },
        { id: 'c3', frameworkTaskId: 'c', nodeId: 'n1', spec: spec(600) },
      ],
      atMs: 2,
    });
    expect(tooMuch).toMatchObject({ ok: false, code: 'CONFLICT' });
    expect(!tooMuch.ok && tooMuch.message).toMatch(/node n1 no longer fit/);
    expect(state.tasks.size).toBe(0);
    expect(state.frameworks.get('fw-1')?.taskCount).toBe(0);
    apply({ type: 'submitTask', id: 'taken', spec: spec(), atMs: 3 });
    expect(
      apply({
        type: 'launchFrameworkTasks',
        frameworkId: 'fw-1',
        tasks: [{ id: 'taken', frameworkTaskId: 'a', nodeId: 'n1', spec: spec() }],
        atMs: 4,
      }),
    ).toMatchObject({ ok: false, message: 'task id taken is taken' });
    expect(
      apply({
        type: 'launchFrameworkTasks',
        frameworkId: 'fw-nobody',
        tasks: [{ id: 'c9', frameworkTaskId: 'a', nodeId: 'n1', spec: spec() }],
        atMs: 5,
      }),
    ).toMatchObject({ ok: false, code: 'NOT_FOUND' });
  });

  it("turns its tasks' states into updates kept until acknowledged", () => {
    const { state, apply } = cluster();
    apply({
      type: 'launchFrameworkTasks',
      frameworkId: 'fw-1',
      tasks: [{ id: 'c1', frameworkTaskId: 'job-1', nodeId: 'n1', spec: spec() }],
      atMs: 2,
    });
    apply(report('c1', 'n1', 'running', 3));
    apply(report('c1', 'n1', 'finished', 4));
    const updates = state.frameworks.pendingUpdates('fw-1');
    expect(updates.map((update) => [update.taskId, update.status.state])).toEqual([
      ['job-1', 'TASK_RUNNING'],
      ['job-1', 'TASK_FINISHED'],
    ]);
    expect(updates[1]?.status.message).toBe('exit code 0');
    for (const update of updates)
      apply({
        type: 'acknowledgeFrameworkUpdate',
        frameworkId: 'fw-1',
        taskId: update.taskId,
        uuid: update.uuid,
        atMs: 5,
      });
    expect(state.frameworks.pendingUpdates('fw-1')).toEqual([]);
  });

  it('kills the live tasks of a framework torn down, and keeps the registry across a snapshot', () => {
    const { state, apply } = cluster();
    apply({
      type: 'launchFrameworkTasks',
      frameworkId: 'fw-1',
      tasks: [{ id: 'c1', frameworkTaskId: 'job-1', nodeId: 'n1', spec: spec() }],
      atMs: 2,
    });
    const copy = new ClusterState();
    copy.restore(state.toSnapshot());
    expect(copy.frameworks.get('fw-1')).toMatchObject({ taskCount: 1, streamId: 's1' });
    expect(copy.tasks.get('c1')?.framework).toEqual({ id: 'fw-1', taskId: 'job-1', name: 'batch' });
    apply({ type: 'teardownFramework', frameworkId: 'fw-1', atMs: 3 });
    expect(state.frameworks.has('fw-1')).toBe(false);
    expect(state.tasks.get('c1')?.desired).toBe('kill');
  });

  it('refuses a snapshot whose frameworks do not decode, and keeps the state it had', () => {
    const { state } = cluster();
    const snapshot = JSON.parse(state.toSnapshot()) as Record<string, unknown>;
    const broken = JSON.stringify({ ...snapshot, frameworks: { frameworks: [{ id: 7 }] } });
    expect(() => state.restore(broken)).toThrow(/frameworks snapshot/);
    expect(state.nodes.size).toBe(2);
    expect(state.frameworks.has('fw-1')).toBe(true);
  });
});
