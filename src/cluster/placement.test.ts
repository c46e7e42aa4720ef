/** The state's side of placement: every resource re-checked at apply, preemption, batches, namespaces. */
import { describe, expect, it } from 'vitest';
import { ClusterState } from './state.ts';
import type { Command } from './command.ts';
import type { Task, TaskSpec } from './task.ts';

const MiB = 1024 * 1024;
const base: TaskSpec = {
  name: 't',
  driver: 'exec',
  command: ['true'],
  cpuMillis: 100,
  memoryBytes: 16 * MiB,
  priority: 50,
  env: {},
  constraints: {},
};

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
      capacity: { cpuMillis: 1000, memoryBytes: 256 * MiB, diskBytes: 100 * MiB, devices: { gpu: 2 } },
      labels: { zone: 'eu', rack: 'r12' },
      drivers: ['exec'],
    },
    atMs: 0,
  });
  return { state, apply };
}

const assign = (taskId: string, extra: Partial<Extract<Command, { type: 'assignTasks' }>> = {}): Command => ({
  type: 'assignTasks',
  term: 1,
  assignments: [{ taskId, nodeId: 'n1' }],
  waiting: [],
  atMs: 1,
  ...extra,
});

const stateOf = (state: ClusterState, id: string): Task['state'] | undefined => state.tasks.get(id)?.state;

describe('placement in the replicated state', () => {
  it('re-checks disk, devices and ports at apply, and frees them when the task ends', () => {
    const { state, apply } = cluster();
    apply({
      type: 'submitTask',
      id: 'a',
      spec: { ...base, diskBytes: 60 * MiB, devices: { gpu: 2 }, ports: { http: 8080 } },
      atMs: 1,
    });
    apply({ type: 'submitTask', id: 'disk', spec: { ...base, diskBytes: 60 * MiB }, atMs: 1 });
    apply({ type: 'submitTask', id: 'gpu', spec: { ...base, devices: { gpu: 1 } }, atMs: 1 });
    apply({ type: 'submitTask', id: 'port', spec: { ...base, ports: { web: 8080 } }, atMs: 1 });
    apply(assign('a'));
    expect(stateOf(state, 'a')).toBe('assigned');
    expect(state.freeOn('n1')).toMatchObject({ diskBytes: 40 * MiB, devices: { gpu: 0 } });
    expect(state.portsInUseOn('n1')).toEqual([8080]);
    for (const id of ['disk', 'gpu', 'port']) {
      apply(assign(id));
      expect(stateOf(state, id), id).toBe('pending');
    }
    apply({
      type: 'reportTask',
      nodeId: 'n1',
      taskId: 'a',
      attempt: 0,
      state: 'finished',
      exitCode: 0,
      reason: null,
      atMs: 2,
    });
    expect(state.freeOn('n1')).toMatchObject({ diskBytes: 100 * MiB, devices: { gpu: 2 } });
    expect(state.portsInUseOn('n1')).toEqual([]);
    for (const id of ['disk', 'gpu', 'port']) apply(assign(id));
    expect(['disk', 'gpu', 'port'].map((id) => stateOf(state, id))).toEqual([
      'assigned',
      'assigned',
      'assigned',
    ]);
  });

  it('re-checks label rules at apply', () => {
    const { state, apply } = cluster();
    apply({ type: 'submitTask', id: 'us', spec: { ...base, constraints: { zone: 'us' } }, atMs: 1 });
    apply({
      type: 'submitTask',
      id: 'not-eu',
      spec: { ...base, labelConstraints: [{ key: 'zone', operator: '!=', value: 'eu' }] },
      atMs: 1,
    });
    apply({
      type: 'submitTask',
      id: 'rack',
      spec: { ...base, labelConstraints: [{ key: 'rack', operator: 'regex', pattern: '^r1' }] },
      atMs: 1,
    });
    for (const id of ['us', 'not-eu', 'rack']) apply(assign(id));
    expect(['us', 'not-eu', 'rack'].map((id) => stateOf(state, id))).toEqual([
      'pending',
      'pending',
      'assigned',
    ]);
  });

  it('preempts only tasks at least the gap lower; a victim with a restart policy is queued again', () => {
    const { state, apply } = cluster();
    const restart = { policy: 'on-failure', maxRestarts: 3, delayMs: 0 } as const;
    apply({
      type: 'submitTask',
      id: 'low',
      spec: { ...base, priority: 10, cpuMillis: 500, restart },
      atMs: 1,
    });
    apply({ type: 'submitTask', id: 'low-final', spec: { ...base, priority: 10, cpuMillis: 500 }, atMs: 1 });
    apply({
      type: 'assignTasks',
      term: 1,
      assignments: [
        { taskId: 'low', nodeId: 'n1' },
        { taskId: 'low-final', nodeId: 'n1' },
      ],
      waiting: [],
      atMs: 1,
    });
    apply({ type: 'submitTask', id: 'near', spec: { ...base, priority: 15, cpuMillis: 500 }, atMs: 2 });
    apply({ type: 'submitTask', id: 'high', spec: { ...base, priority: 90, cpuMillis: 1000 }, atMs: 2 });
    // 15 is not 10 above 10: refused.
    apply(
      assign('x', {
        assignments: [],
        preemptions: [{ taskId: 'low', nodeId: 'n1', forTaskId: 'near' }],
        preemptionPriorityGap: 10,
      }),
    );
    expect(state.tasks.get('low')?.desired).toBe('run');
    apply(
      assign('x', {
        assignments: [],
        preemptions: [
          { taskId: 'low', nodeId: 'n1', forTaskId: 'high' },
          { taskId: 'low-final', nodeId: 'n1', forTaskId: 'high' },
        ],
        preemptionPriorityGap: 10,
      }),
    );
    expect(state.tasks.get('low')?.desired).toBe('preempt');
    expect(state.tasks.get('high')?.nominatedNodeId).toBe('n1');
    for (const id of ['low', 'low-final']) {
      apply({
        type: 'reportTask',
        nodeId: 'n1',
        taskId: id,
        attempt: 0,
        state: 'killed',
        exitCode: 137,
        reason: 'killed',
        atMs: 3,
      });
    }
    expect(state.tasks.get('low')).toMatchObject({ state: 'pending', attempt: 1, desired: 'run' });
    expect(state.tasks.get('low')?.reason).toMatch(/preempted by t \(high, priority 90\); queued again/);
    expect(state.tasks.get('low-final')).toMatchObject({ state: 'killed' });
    expect(state.tasks.get('low-final')?.reason).toMatch(/preempted by t \(high/);
    apply(assign('high'));
    expect(state.tasks.get('high')).toMatchObject({ state: 'assigned' });
    expect(state.tasks.get('high')?.nominatedNodeId).toBeUndefined();
  });

  it('never preempts a task marked not preemptible', () => {
    const { state, apply } = cluster();
    apply({ type: 'submitTask', id: 'keep', spec: { ...base, priority: 0, preemptible: false }, atMs: 1 });
    apply(assign('keep'));
    apply({ type: 'submitTask', id: 'high', spec: { ...base, priority: 100 }, atMs: 2 });
    apply(
      assign('x', {
        assignments: [],
        preemptions: [{ taskId: 'keep', nodeId: 'n1', forTaskId: 'high' }],
        preemptionPriorityGap: 10,
      }),
    );
    expect(state.tasks.get('keep')?.desired).toBe('run');
  });

  it('accepts a batch whole, or none of it past the live-task limit', () => {
    const { state, apply } = cluster();
    const result = apply({
      type: 'submitTasks',
      tasks: [
        { id: 'g0', spec: { ...base, job: 'j', group: 'g' } },
        { id: 'g1', spec: { ...base, job: 'j', group: 'g' } },
      ],
      atMs: 1,
    });
    expect(result).toEqual({ ok: true, taskId: 'g0' });
    expect(state.pendingTasks().map((t) => t.id)).toEqual(['g0', 'g1']);
    // The same batch again (a retried request) adds nothing.
    apply({
      type: 'submitTasks',
      tasks: [
        { id: 'g0', spec: base },
        { id: 'g1', spec: base },
      ],
      atMs: 2,
    });
    expect(state.tasks.size).toBe(2);
  });

  it('keeps namespace policies in snapshots', () => {
    const { state, apply } = cluster();
    apply({
      type: 'setNamespace',
      policy: { name: 'team-a', weight: 2, quota: { cpuMillis: 4000 } },
      atMs: 1,
    });
    const copy = new ClusterState();
    copy.restore(state.toSnapshot());
    expect([...copy.namespaces.values()]).toEqual([
      { name: 'team-a', weight: 2, quota: { cpuMillis: 4000 } },
    ]);
  });
});
