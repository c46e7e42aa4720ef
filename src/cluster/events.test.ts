import { describe, expect, it } from 'vitest';
import type { Command, NodeDescription, TaskReportRecord } from './command.ts';
import { clusterEventSchema, deriveEvents, eventBasis, type ClusterEvent } from './events.ts';
import { taskLimitsBefore } from './limits.ts';
import { ClusterState } from './state.ts';
import type { TaskSpec, TaskState } from './task.ts';

const MiB = 1024 * 1024;
const spec = (extra: Partial<TaskSpec> = {}): TaskSpec => ({
  name: 'web',
  driver: 'exec',
  command: ['true'],
  cpuMillis: 100,
  memoryBytes: 64 * MiB,
  priority: 50,
  env: {},
  constraints: {},
  ...extra,
});
const node = (id: string, name: string): NodeDescription => ({
  id,
  name,
  address: 'h:1',
  capacity: { cpuMillis: 1000, memoryBytes: 1024 * MiB },
  labels: {},
  drivers: ['exec'],
});

/** A state that applies commands as a node does, collecting each one's events. */
function cluster(): { state: ClusterState; apply: (command: Command) => ClusterEvent[] } {
  const state = new ClusterState();
  let index = 0;
  return {
    state,
    apply: (command) => {
      index++;
      const basis = eventBasis(state, command);
      state.apply(index, command);
      const events = deriveEvents(index, command, basis, state);
      for (const event of events) expect(clusterEventSchema.safeParse(event).success).toBe(true);
      return events;
    },
  };
}

const report = (
  taskId: string,
  state: 'starting' | 'running' | 'finished' | 'failed' | 'killed',
  extra: { attempt?: number; exitCode?: number | null; reason?: string | null; nodeId?: string } = {},
): Command => ({
  type: 'reportTask',
  nodeId: extra.nodeId ?? 'n1',
  taskId,
  attempt: extra.attempt ?? 0,
  state,
  exitCode: extra.exitCode ?? null,
  reason: extra.reason ?? null,
  atMs: 5000,
});
const assign = (taskId: string, nodeId = 'n1'): Command => ({
  type: 'assignTasks',
  term: 1,
  assignments: [{ taskId, nodeId }],
  waiting: [],
  atMs: 2000,
});

/** The events as (type, state, and what sets each type apart), for compact expectations. */
function brief(events: readonly ClusterEvent[]): string[] {
  return events.map((event) => {
    switch (event.type) {
      case 'task:submitted':
        return `${event.index} ${event.type} ${event.taskId} ${event.state}`;
      case 'task:assigned':
        return `${event.index} ${event.type} ${event.taskId} ${event.node}`;
      case 'task:state':
        return `${event.index} ${event.type} ${event.taskId} ${event.state}#${event.attempt} ${event.reason ?? '-'} ${event.exitCode ?? '-'}`;
      case 'task:desired':
        return `${event.index} ${event.type} ${event.taskId} ${event.desired} (${event.state})`;
      case 'task:note':
        return `${event.index} ${event.type} ${event.taskId} ${event.message}`;
      case 'task:health':
        return `${event.index} ${event.type} ${event.taskId} ${event.health} ${event.message}`;
      case 'node:up':
        return `${event.index} ${event.type} ${event.node}`;
      case 'node:down':
        return `${event.index} ${event.type} ${event.node} ${event.reason}`;
      case 'node:draining':
        return `${event.index} ${event.type} ${event.node} ${event.draining}`;
      case 'leader:elected':
        return `${event.index} ${event.type} ${event.leader}`;
    }
  });
}

describe('the events of each command', () => {
  it('a node up, once: a second upsert of a node that is up says nothing', () => {
    const { apply } = cluster();
    const up = apply({ type: 'upsertNode', node: node('n1', 'one'), atMs: 1000 });
    expect(up).toEqual([
      { index: 1, type: 'node:up', at: '1970-01-01T00:00:01.000Z', nodeId: 'n1', node: 'one' },
    ]);
    expect(apply({ type: 'upsertNode', node: node('n1', 'one'), atMs: 1001 })).toEqual([]);
  });

  it('a task submitted, assigned, starting, running, finished: one event each, with the task', () => {
    const { apply } = cluster();
    apply({ type: 'upsertNode', node: node('n1', 'one'), atMs: 0 });
    const submitted = apply({
      type: 'submitTask',
      id: 'a',
      spec: spec({ namespace: 'team', job: 'site' }),
      atMs: 1000,
    });
    expect(submitted).toEqual([
      {
        index: 2,
        type: 'task:submitted',
        at: '1970-01-01T00:00:01.000Z',
        taskId: 'a',
        name: 'web',
        namespace: 'team',
        job: 'site',
        state: 'pending',
        attempt: 0,
      },
    ]);
    // A retried submission of the same id is no new task.
    expect(apply({ type: 'submitTask', id: 'a', spec: spec(), atMs: 1001 })).toEqual([]);
    expect(apply(assign('a'))).toEqual([
      {
        index: 4,
        type: 'task:assigned',
        at: '1970-01-01T00:00:02.000Z',
        taskId: 'a',
        name: 'web',
        namespace: 'team',
        job: 'site',
        state: 'assigned',
        attempt: 0,
        nodeId: 'n1',
        node: 'one',
      },
    ]);
    expect(brief(apply(report('a', 'starting')))).toEqual(['5 task:state a starting#0 - -']);
    expect(brief(apply(report('a', 'running')))).toEqual(['6 task:state a running#0 - -']);
    // A late or repeated report changes nothing, and says nothing.
    expect(apply(report('a', 'starting'))).toEqual([]);
    const finished = apply(report('a', 'finished', { exitCode: 0, reason: 'exit code 0' }));
    expect(finished).toEqual([
      {
        index: 8,
        type: 'task:state',
        at: '1970-01-01T00:00:05.000Z',
        taskId: 'a',
        name: 'web',
        namespace: 'team',
        job: 'site',
        state: 'finished',
        attempt: 0,
        nodeId: 'n1',
        node: 'one',
        reason: 'exit code 0',
        exitCode: 0,
      },
    ]);
    expect(apply({ type: 'killTask', taskId: 'a', atMs: 6000 })).toEqual([]);
  });

  it('submitTasks: one submitted event per replica, in order', () => {
    const { apply } = cluster();
    const events = apply({
      type: 'submitTasks',
      tasks: ['a', 'b', 'c'].map((id) => ({ id, spec: spec({ job: 'web' }) })),
      atMs: 1,
    });
    expect(brief(events)).toEqual([
      '1 task:submitted a pending',
      '1 task:submitted b pending',
      '1 task:submitted c pending',
    ]);
  });

  it('a failure that restarts: the end with its exit code, then pending again for the next attempt', () => {
    const { apply } = cluster();
    apply({ type: 'upsertNode', node: node('n1', 'one'), atMs: 0 });
    apply({
      type: 'submitTask',
      id: 'a',
      spec: spec({ restart: { policy: 'on-failure', maxRestarts: 1, delayMs: 1000 } }),
      atMs: 1,
    });
    apply(assign('a'));
    apply(report('a', 'running'));
    expect(brief(apply(report('a', 'failed', { exitCode: 7, reason: 'exit code 7' })))).toEqual([
      '5 task:state a failed#0 exit code 7 7',
      '5 task:state a pending#1 failed (exit code 7); restart 1 in 1 s -',
    ]);
    apply(assign('a'));
    expect(brief(apply(report('a', 'failed', { attempt: 1, exitCode: 7, reason: 'exit code 7' })))).toEqual([
      '7 task:state a failed#1 exit code 7 7',
    ]);
  });

  it('a kill: the wish, then the end (at once for a task not yet placed)', () => {
    const { apply } = cluster();
    apply({ type: 'upsertNode', node: node('n1', 'one'), atMs: 0 });
    apply({ type: 'submitTask', id: 'a', spec: spec(), atMs: 1 });
    apply({ type: 'submitTask', id: 'b', spec: spec(), atMs: 1 });
    apply(assign('a'));
    expect(brief(apply({ type: 'killTask', taskId: 'a', atMs: 3 }))).toEqual([
      '5 task:desired a kill (assigned)',
    ]);
    // Asked twice: no second event.
    expect(apply({ type: 'killTask', taskId: 'a', atMs: 3 })).toEqual([]);
    expect(brief(apply(report('a', 'killed', { reason: 'killed' })))).toEqual([
      '7 task:state a killed#0 killed -',
    ]);
    expect(brief(apply({ type: 'killTask', taskId: 'b', atMs: 4 }))).toEqual([
      '8 task:desired b kill (pending)',
      '8 task:state b killed#0 killed before it was placed -',
    ]);
    expect(apply({ type: 'killTask', taskId: 'zzz', atMs: 4 })).toEqual([]);
  });

  it('a node down: the node, then each of its tasks lost (and queued again if it restarts)', () => {
    const { apply } = cluster();
    apply({ type: 'upsertNode', node: node('n1', 'one'), atMs: 0 });
    apply({ type: 'submitTask', id: 'a', spec: spec(), atMs: 1 });
    apply({
      type: 'submitTask',
      id: 'b',
      spec: spec({ restart: { policy: 'always', maxRestarts: null, delayMs: 0 } }),
      atMs: 1,
    });
    apply({
      type: 'assignTasks',
      term: 1,
      assignments: [
        { taskId: 'a', nodeId: 'n1' },
        { taskId: 'b', nodeId: 'n1' },
      ],
      waiting: [],
      atMs: 2,
    });
    const down = apply({ type: 'nodeDown', nodeId: 'n1', reason: 'node one stopped answering', atMs: 9 });
    expect(brief(down)).toEqual([
      '5 node:down one node one stopped answering',
      '5 task:state a lost#0 node one stopped answering -',
      '5 task:state a pending#1 lost (node one stopped answering); placed again elsewhere -',
      '5 task:state b lost#0 node one stopped answering -',
      '5 task:state b pending#1 lost (node one stopped answering); restart 1 in 0 s -',
    ]);
    expect(apply({ type: 'nodeDown', nodeId: 'n1', reason: 'again', atMs: 10 })).toEqual([]);
    expect(brief(apply({ type: 'upsertNode', node: node('n1', 'one'), atMs: 11 }))).toEqual([
      '7 node:up one',
    ]);
  });

  it('a drain: the node, each task moving, then each one pending again once its run ends', () => {
    const { apply } = cluster();
    apply({ type: 'upsertNode', node: node('n1', 'one'), atMs: 0 });
    apply({ type: 'submitTask', id: 'a', spec: spec(), atMs: 1 });
    apply(assign('a'));
    apply(report('a', 'running'));
    expect(brief(apply({ type: 'drainNode', nodeId: 'n1', drain: true, atMs: 5 }))).toEqual([
      '5 node:draining one true',
      '5 task:desired a move (running)',
    ]);
    expect(brief(apply(report('a', 'killed', { reason: 'stopped to move' })))).toEqual([
      '6 task:state a killed#0 stopped to move -',
      '6 task:state a pending#1 moved off one -',
    ]);
    expect(brief(apply({ type: 'drainNode', nodeId: 'n1', drain: false, atMs: 7 }))).toEqual([
      '7 node:draining one false',
    ]);
  });

  it('a preemption: the victim is wished away, then queued again or killed by its restart policy', () => {
    const { apply } = cluster();
    apply({ type: 'upsertNode', node: node('n1', 'one'), atMs: 0 });
    apply({ type: 'submitTask', id: 'low', spec: spec({ name: 'low', priority: 10 }), atMs: 1 });
    apply(assign('low'));
    apply(report('low', 'running'));
    apply({ type: 'submitTask', id: 'high', spec: spec({ name: 'high', priority: 90 }), atMs: 5 });
    const plan = apply({
      type: 'assignTasks',
      term: 1,
      assignments: [],
      preemptions: [{ taskId: 'low', nodeId: 'n1', forTaskId: 'high' }],
      waiting: [{ taskId: 'high', reason: 'waiting for low to stop' }],
      atMs: 6,
    });
    expect(plan).toMatchObject([
      {
        type: 'task:desired',
        taskId: 'low',
        desired: 'preempt',
        state: 'running',
        reason: 'preempted by high (high, priority 90)',
      },
    ]);
    expect(brief(apply(report('low', 'killed', { reason: 'stopped', exitCode: 137 })))).toEqual([
      '7 task:state low killed#0 preempted by high (high, priority 90) 137',
    ]);
  });

  it("an agent's notes: one event per record it adds, none for a batch about another run", () => {
    const { apply } = cluster();
    apply({ type: 'upsertNode', node: node('n1', 'one'), atMs: 0 });
    apply({ type: 'submitTask', id: 'a', spec: spec(), atMs: 1 });
    apply(assign('a'));
    const notes = apply({
      type: 'taskEvents',
      nodeId: 'n1',
      taskId: 'a',
      attempt: 0,
      events: [
        { atMs: 3000, message: 'pulling image busybox' },
        { atMs: 4000, message: 'x'.repeat(1000) },
      ],
    });
    expect(notes).toMatchObject([
      { type: 'task:note', taskId: 'a', state: 'assigned', at: '1970-01-01T00:00:03.000Z' },
      { type: 'task:note', at: '1970-01-01T00:00:04.000Z' },
    ]);
    expect(notes[0]).toMatchObject({ message: 'pulling image busybox' });
    // Cut as the state cuts it.
    expect((notes[1] as { message: string }).message.length).toBeLessThan(1000);
    expect(
      apply({
        type: 'taskEvents',
        nodeId: 'n1',
        taskId: 'a',
        attempt: 1,
        events: [{ atMs: 5000, message: 'stale' }],
      }),
    ).toEqual([]);
  });

  it('a batch of reports: each report’s events, in the batch’s order, each end with its own exit code', () => {
    const { apply } = cluster();
    apply({ type: 'upsertNode', node: node('n1', 'one'), atMs: 0 });
    apply({ type: 'submitTask', id: 'a', spec: spec(), atMs: 1 });
    apply({
      type: 'submitTask',
      id: 'b',
      spec: spec({ restart: { policy: 'on-failure', maxRestarts: 1, delayMs: 1000 } }),
      atMs: 1,
    });
    apply({ type: 'submitTask', id: 'c', spec: spec(), atMs: 1 });
    apply({
      type: 'assignTasks',
      term: 1,
      assignments: ['a', 'b', 'c'].map((taskId) => ({ taskId, nodeId: 'n1' })),
      waiting: [],
      atMs: 2,
    });
    const batch = (reports: TaskReportRecord[], nodeId = 'n1'): Command => ({
      type: 'reportTasks',
      nodeId,
      reports,
      atMs: 5000,
    });
    const of = (taskId: string, state: TaskState, exitCode: number | null = null): TaskReportRecord => ({
      taskId,
      attempt: 0,
      state,
      exitCode,
      reason: exitCode === null ? null : `exit code ${exitCode}`,
    });
    expect(brief(apply(batch([of('c', 'running'), of('a', 'running'), of('b', 'running')])))).toEqual([
      '6 task:state c running#0 - -',
      '6 task:state a running#0 - -',
      '6 task:state b running#0 - -',
    ]);
    const ends = apply(
      batch([of('a', 'finished', 0), of('b', 'failed', 7), of('c', 'starting'), of('zzz', 'finished', 0)]),
    );
    expect(brief(ends)).toEqual([
      '7 task:state a finished#0 exit code 0 0',
      '7 task:state b failed#0 exit code 7 7',
      '7 task:state b pending#1 failed (exit code 7); restart 1 in 1 s -',
    ]);
    expect(ends.every((event) => event.at === '1970-01-01T00:00:05.000Z')).toBe(true);
    // Another node's batch speaks for none of them.
    expect(apply(batch([of('c', 'finished', 0)], 'n2'))).toEqual([]);
  });

  it('namespaces, tokens and task limits: none', () => {
    const { apply } = cluster();
    expect(
      apply({ type: 'setNamespace', policy: { name: 'team', weight: 1, quota: null }, atMs: 1 }),
    ).toEqual([]);
    expect(apply({ type: 'revokeToken', accessorId: '000000000000', atMs: 1 })).toEqual([]);
    expect(apply({ type: 'setTaskLimits', limits: taskLimitsBefore, atMs: 1 })).toEqual([]);
  });
});
