import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeCommand, encodeCommand, type Command } from './command.ts';
import { deriveEvents, eventBasis } from './events.ts';
import { jobFromTaskSpec, jobSpecSchema, nodeIdLabel, type JobSpec } from './job.ts';
import { diffJobSpecs, groupSpecVersions } from './jobs.ts';
import { ClusterState, type ApplyResult } from './state.ts';
import { taskLimitsBefore } from './limits.ts';
import { isTerminal, type Task } from './task.ts';

const MiB = 1024 * 1024;

/** A state applied through the codec, as every node applies the log. */
function cluster(nodeIds: readonly string[]): {
  state: ClusterState;
  apply: (command: Command) => ApplyResult;
  index: () => number;
} {
  const state = new ClusterState();
  let index = 0;
  const apply = (command: Command): ApplyResult =>
    state.apply(++index, decodeCommand(index, encodeCommand(command)));
  for (const id of nodeIds) apply(upsert(id));
  return { state, apply, index: () => index };
}

function upsert(id: string, labels: Record<string, string> = {}): Command {
  return {
    type: 'upsertNode',
    node: {
      id,
      name: id,
      address: 'h:1',
      capacity: { cpuMillis: 4000, memoryBytes: 4096 * MiB },
      labels: { ...labels, [nodeIdLabel]: id },
      drivers: ['exec'],
    },
    atMs: 0,
  };
}

const service = (count: number, command = ['sleep', '600']): JobSpec => ({
  name: 'web',
  type: 'service',
  task: { driver: 'exec', command, cpuMillis: 100, memoryMiB: 32 },
  count,
});

function live(state: ClusterState, name = 'web'): Task[] {
  return state.jobTasks('default', name).filter((task) => !isTerminal(task.state) && task.desired !== 'kill');
}

/** Places every pending task on `nodeId` and reports it running. */
function runAll(apply: (command: Command) => ApplyResult, state: ClusterState, nodeId: string): void {
  const pending = state.pendingTasks().filter((task) => task.spec.constraints[nodeIdLabel] === undefined);
  apply({
    type: 'assignTasks',
    term: 1,
    assignments: pending.map((task) => ({ taskId: task.id, nodeId })),
    waiting: [],
    atMs: 1,
  });
  for (const task of pending)
    apply({
      type: 'reportTask',
      nodeId,
      taskId: task.id,
      attempt: task.attempt,
      state: 'running',
      exitCode: null,
      reason: null,
      atMs: 2,
    });
}

describe('jobs in the replicated state', () => {
  it('starts count instances of a service, in slots 0…count-1, tagged with the version', () => {
    const { state, apply } = cluster(['n1']);
    expect(apply({ type: 'putJob', job: service(3), atMs: 1 })).toEqual({ ok: true });
    const tasks = live(state);
    expect(tasks.map((task) => task.instance?.slot).sort()).toEqual([0, 1, 2]);
    expect(tasks.every((task) => task.instance?.version === 1 && task.spec.job === 'web')).toBe(true);
    expect(tasks.map((task) => task.spec.name).sort()).toEqual(['web.0', 'web.1', 'web.2']);
    expect(state.jobs.get('default/web')).toMatchObject({
      version: 1,
      stopped: false,
      groupVersions: { web: 1 },
    });
  });

  it('is idempotent: the same spec again changes nothing, not even the modify index', () => {
    const { state, apply } = cluster(['n1']);
    apply({ type: 'putJob', job: service(2), atMs: 1 });
    const before = state.toSnapshot();
    apply({ type: 'putJob', job: service(2), atMs: 5 });
    expect(JSON.parse(state.toSnapshot())).toEqual({
      ...JSON.parse(before),
      appliedIndex: state.appliedIndex,
    });
  });

  it('replaces an instance lost with its node in the same step, on another node', () => {
    const { state, apply } = cluster(['n1', 'n2']);
    apply({ type: 'putJob', job: service(2), atMs: 1 });
    runAll(apply, state, 'n1');
    const before = live(state).map((task) => task.id);
    apply({ type: 'nodeDown', nodeId: 'n1', reason: 'node n1 is dead', atMs: 10 });
    const after = live(state);
    expect(after).toHaveLength(2);
    expect(after.every((task) => task.state === 'pending' && !before.includes(task.id))).toBe(true);
    expect(after.map((task) => task.instance?.slot).sort()).toEqual([0, 1]);
  });

  it('changes only the count: adds or removes instances without touching the others', () => {
    const { state, apply } = cluster(['n1']);
    apply({ type: 'putJob', job: service(2), atMs: 1 });
    runAll(apply, state, 'n1');
    const first = live(state)
      .map((task) => task.id)
      .sort();
    apply({ type: 'putJob', job: service(4), atMs: 2 });
    expect(state.jobs.get('default/web')).toMatchObject({ version: 2, groupVersions: { web: 1 } });
    const grown = live(state);
    expect(grown).toHaveLength(4);
    expect(first.every((id) => grown.some((task) => task.id === id))).toBe(true);
    apply({ type: 'putJob', job: service(1), atMs: 3 });
    expect(live(state).map((task) => task.instance?.slot)).toEqual([0]);
  });

  it('replaces every instance when the task changes, recording the version', () => {
    const { state, apply } = cluster(['n1']);
    // Two in parallel: the deployment may replace both at once.
    const update = { maxParallel: 2 };
    apply({ type: 'putJob', job: { ...service(2), update }, atMs: 1 });
    runAll(apply, state, 'n1');
    apply({ type: 'putJob', job: { ...service(2, ['sleep', '900']), update }, atMs: 2 });
    const tasks = live(state);
    expect(tasks).toHaveLength(2);
    expect(tasks.every((task) => task.instance?.version === 2 && task.spec.command[1] === '900')).toBe(true);
    expect(state.jobs.get('default/web')?.history.map((record) => record.version)).toEqual([1, 2]);
  });

  it('refuses a stale --check-index, and a new job with one other than 0', () => {
    const { state, apply } = cluster(['n1']);
    expect(apply({ type: 'putJob', job: service(1), checkIndex: 7, atMs: 1 })).toMatchObject({
      ok: false,
      code: 'CONFLICT',
    });
    expect(apply({ type: 'putJob', job: service(1), checkIndex: 0, atMs: 1 })).toEqual({ ok: true });
    const modifyIndex = state.jobs.get('default/web')?.modifyIndex ?? -1;
    apply({ type: 'putJob', job: service(2), atMs: 2 });
    const stale = apply({ type: 'putJob', job: service(3), checkIndex: modifyIndex, atMs: 3 });
    expect(stale).toMatchObject({ ok: false, code: 'CONFLICT' });
    if (!stale.ok) expect(stale.message).toMatch(/changed since the plan/);
  });

  it('stops every instance on stop, starts them again on apply, and forgets the job on purge', () => {
    const { state, apply } = cluster(['n1']);
    apply({ type: 'putJob', job: service(2), atMs: 1 });
    apply({ type: 'stopJob', namespace: 'default', name: 'web', purge: false, atMs: 2 });
    expect(live(state)).toHaveLength(0);
    apply({ type: 'putJob', job: service(2), atMs: 3 });
    expect(live(state)).toHaveLength(2);
    apply({ type: 'stopJob', namespace: 'default', name: 'web', purge: true, atMs: 4 });
    expect(state.jobs.has('default/web')).toBe(false);
    expect([...state.tasks.values()].every((task) => task.instance === undefined)).toBe(true);
  });

  it('runs a system job once per eligible node, on nodes that join later, and not on a drained one', () => {
    const { state, apply } = cluster(['n1', 'n2']);
    const system: JobSpec = {
      name: 'agent',
      type: 'system',
      task: { driver: 'exec', command: ['sleep', '600'], cpuMillis: 100, memoryMiB: 32 },
    };
    apply({ type: 'putJob', job: system, atMs: 1 });
    const pinned = (): string[] =>
      live(state, 'agent')
        .map((task) => task.instance?.pinnedNodeId ?? '')
        .sort();
    expect(pinned()).toEqual(['n1', 'n2']);
    expect(
      live(state, 'agent').every(
        (task) => task.spec.constraints[nodeIdLabel] === task.instance?.pinnedNodeId,
      ),
    ).toBe(true);
    apply(upsert('n3'));
    expect(pinned()).toEqual(['n1', 'n2', 'n3']);
    apply({ type: 'drainNode', nodeId: 'n2', drain: true, atMs: 5 });
    expect(pinned()).toEqual(['n1', 'n3']);
    apply({ type: 'nodeDown', nodeId: 'n3', reason: 'dead', atMs: 6 });
    expect(pinned()).toEqual(['n1']);
  });

  it("runs a group's several tasks together: one co-located gang per instance, a replacement beside its siblings", () => {
    const { state, apply } = cluster(['n1', 'n2']);
    const exec = (name: string): NonNullable<JobSpec['task']> => ({
      name,
      driver: 'exec' as const,
      command: ['sleep', '600'],
      cpuMillis: 100,
      memoryMiB: 16,
    });
    const job: JobSpec = {
      name: 'app',
      type: 'service',
      groups: [{ name: 'web', count: 2, tasks: [exec('server'), exec('sidecar')] }],
    };
    apply({ type: 'putJob', job, atMs: 1 });
    const tasks = live(state, 'app');
    expect(tasks.map((task) => task.spec.name).sort()).toEqual([
      'app.web.0.server',
      'app.web.0.sidecar',
      'app.web.1.server',
      'app.web.1.sidecar',
    ]);
    const gangOf = (slot: number): Set<string | undefined> =>
      new Set(tasks.filter((task) => task.instance?.slot === slot).map((task) => task.spec.group));
    expect(gangOf(0).size).toBe(1);
    expect(gangOf(1).size).toBe(1);
    expect([...gangOf(0)][0]).not.toBe([...gangOf(1)][0]);
    expect(tasks.every((task) => task.spec.colocated === true)).toBe(true);
    // Slot 0 runs on n2; its server fails: the instance starts again whole, as one co-located gang
    // (the sidecar alone stays where it is no longer wanted: it stops).
    const slot0 = tasks.filter((task) => task.instance?.slot === 0);
    apply({
      type: 'assignTasks',
      term: 1,
      assignments: slot0.map((task) => ({ taskId: task.id, nodeId: 'n2' })),
      waiting: [],
      atMs: 2,
    });
    const server = slot0.find((task) => task.instance?.task === 'server');
    const sidecar = slot0.find((task) => task.instance?.task === 'sidecar');
    if (!server || !sidecar) throw new Error('no server or sidecar');
    apply({
      type: 'reportTask',
      nodeId: 'n2',
      taskId: server.id,
      attempt: 0,
      state: 'failed',
      exitCode: 1,
      reason: 'exit code 1',
      atMs: 3,
    });
    expect(state.tasks.get(sidecar.id)?.desired).toBe('kill');
    const again = live(state, 'app').filter((task) => task.instance?.slot === 0);
    expect(again.map((task) => task.instance?.task).sort()).toEqual(['server', 'sidecar']);
    expect(again.every((task) => task.id !== server.id && task.id !== sidecar.id)).toBe(true);
    expect(new Set(again.map((task) => task.spec.group)).size).toBe(1);
    expect(again.every((task) => task.spec.colocated === true)).toBe(true);
  });

  it('says what its reconciliation did in the event stream: new instances, and the ones it stops', () => {
    const { state, apply, index } = cluster(['n1']);
    apply({ type: 'putJob', job: service(2), atMs: 1 });
    const command: Command = { type: 'putJob', job: service(1), atMs: 2 };
    const basis = eventBasis(state, command);
    state.apply(index() + 1, command);
    const events = deriveEvents(index() + 1, command, basis, state);
    expect(events.map((event) => event.type)).toEqual(['task:desired', 'task:state']);
  });

  it('keeps jobs and their instances through a Raft snapshot', () => {
    const { state, apply } = cluster(['n1']);
    apply({ type: 'putJob', job: service(2), atMs: 1 });
    const copy = new ClusterState();
    copy.restore(state.toSnapshot());
    expect(copy.toSnapshot()).toBe(state.toSnapshot());
    expect(copy.jobTasks('default', 'web')).toHaveLength(2);
  });
});

describe('jobs: what the review found', () => {
  const batch = (count: number): JobSpec => ({
    name: 'crunch',
    type: 'batch',
    count,
    task: { driver: 'exec', command: ['true'], cpuMillis: 100, memoryMiB: 16 },
  });

  it("keeps a batch instance's ended tasks when the cluster forgets old plain ones: done stays done", () => {
    const { state, apply } = cluster(['n1']);
    apply({ type: 'putJob', job: batch(1), atMs: 1 });
    const [first] = live(state, 'crunch');
    if (!first) throw new Error('no instance');
    apply({
      type: 'assignTasks',
      term: 1,
      assignments: [{ taskId: first.id, nodeId: 'n1' }],
      waiting: [],
      atMs: 2,
    });
    apply({
      type: 'reportTask',
      nodeId: 'n1',
      taskId: first.id,
      attempt: 0,
      state: 'finished',
      exitCode: 0,
      reason: null,
      atMs: 3,
    });
    // More plain tasks end than the cluster keeps.
    for (let i = 0; i <= taskLimitsBefore.terminalTasksRetainedMax; i++) {
      const id = i.toString(16).padStart(12, '0');
      apply({
        type: 'submitTask',
        id,
        spec: {
          name: 't',
          driver: 'exec',
          command: ['true'],
          cpuMillis: 1,
          memoryBytes: MiB,
          priority: 50,
          env: {},
          constraints: {},
        },
        atMs: 4,
      });
      apply({ type: 'killTask', taskId: id, atMs: 4 });
    }
    expect(state.tasks.get(first.id)?.state).toBe('finished');
    // Touched again (a count change to the same count of a new version does not rerun a finished slot).
    apply({ type: 'putJob', job: batch(2), atMs: 5 });
    expect(live(state, 'crunch').map((task) => task.instance?.slot)).toEqual([1]);
  });

  it('stops the instances of a job whose type becomes periodic', () => {
    const { state, apply } = cluster(['n1']);
    apply({ type: 'putJob', job: service(2), atMs: 1 });
    apply({
      type: 'putJob',
      job: { ...service(2), type: 'periodic', periodic: { cron: '0 3 * * *' }, count: 1 },
      atMs: 2,
    });
    expect(live(state)).toHaveLength(0);
  });

  it('finds another id when the one it derives is taken', () => {
    const { state, apply, index } = cluster(['n1']);
    // The id the job's first instance would get at the entry after next: a client takes it first.
    const derived = createHash('sha256')
      .update(`${index() + 2}/default/web/0`)
      .digest('hex')
      .slice(0, 12);
    const plain = {
      name: 'p',
      driver: 'exec' as const,
      command: ['true'],
      cpuMillis: 1,
      memoryBytes: MiB,
      priority: 50,
      env: {},
      constraints: {},
    };
    apply({ type: 'submitTask', id: derived, spec: plain, atMs: 0 });
    apply({ type: 'putJob', job: service(2), atMs: 1 });
    expect(live(state)).toHaveLength(2);
    expect(state.tasks.get(derived)?.spec.name).toBe('p');
  });

  it('reschedules a preempted batch instance instead of counting it a failure', () => {
    const { state, apply } = cluster(['n1']);
    apply({ type: 'putJob', job: batch(1), atMs: 1 });
    const [first] = live(state, 'crunch');
    if (!first) throw new Error('no instance');
    apply({
      type: 'assignTasks',
      term: 1,
      assignments: [{ taskId: first.id, nodeId: 'n1' }],
      waiting: [],
      atMs: 2,
    });
    apply({
      type: 'submitTask',
      id: 'bbbbbbbbbbbb',
      spec: {
        name: 'vip',
        driver: 'exec',
        command: ['true'],
        cpuMillis: 100,
        memoryBytes: MiB,
        priority: 90,
        env: {},
        constraints: {},
      },
      atMs: 3,
    });
    apply({
      type: 'assignTasks',
      term: 1,
      assignments: [],
      preemptions: [{ taskId: first.id, nodeId: 'n1', forTaskId: 'bbbbbbbbbbbb' }],
      waiting: [],
      atMs: 4,
    });
    apply({
      type: 'reportTask',
      nodeId: 'n1',
      taskId: first.id,
      attempt: 0,
      state: 'killed',
      exitCode: null,
      reason: 'stopped',
      atMs: 5,
    });
    expect(state.tasks.get(first.id)?.state).toBe('lost');
    expect(live(state, 'crunch')).toHaveLength(1);
  });

  it('reschedules a plain task its node lost, not one its agent reported lost', () => {
    const { state, apply } = cluster(['n1', 'n2']);
    const plain = (id: string): Command => ({
      type: 'submitTask' as const,
      id,
      spec: {
        name: id,
        driver: 'exec' as const,
        command: ['true'],
        cpuMillis: 1,
        memoryBytes: MiB,
        priority: 50,
        env: {},
        constraints: {},
      },
      atMs: 0,
    });
    apply(plain('aaaaaaaaaaa1'));
    apply(plain('aaaaaaaaaaa2'));
    apply({
      type: 'assignTasks',
      term: 1,
      assignments: [
        { taskId: 'aaaaaaaaaaa1', nodeId: 'n1' },
        { taskId: 'aaaaaaaaaaa2', nodeId: 'n2' },
      ],
      waiting: [],
      atMs: 1,
    });
    apply({
      type: 'reportTask',
      nodeId: 'n1',
      taskId: 'aaaaaaaaaaa1',
      attempt: 0,
      state: 'lost',
      exitCode: null,
      reason: 'its handle was lost',
      atMs: 2,
    });
    apply({ type: 'nodeDown', nodeId: 'n2', reason: 'n2 is dead', atMs: 3 });
    expect(state.tasks.get('aaaaaaaaaaa1')?.state).toBe('lost');
    expect(state.tasks.get('aaaaaaaaaaa2')).toMatchObject({ state: 'pending', attempt: 1 });
  });
});

describe('job versions and diffs', () => {
  it('keeps a group at its version when only the count or another group changes', () => {
    const groups = (a: string, countB: number): JobSpec => ({
      name: 'app',
      type: 'service',
      groups: [
        {
          name: 'a',
          count: 1,
          task: { driver: 'exec', command: ['sleep', a], cpuMillis: 100, memoryMiB: 32 },
        },
        {
          name: 'b',
          count: countB,
          task: { driver: 'exec', command: ['sleep', '1'], cpuMillis: 100, memoryMiB: 32 },
        },
      ],
    });
    const v1 = groupSpecVersions(undefined, groups('1', 1), 1);
    const record = { groupVersions: v1, spec: groups('1', 1) } as Parameters<typeof groupSpecVersions>[0];
    expect(groupSpecVersions(record, groups('2', 3), 2)).toEqual({ a: 2, b: 1 });
  });

  it('lists each changed field by its path', () => {
    expect(diffJobSpecs(service(2), service(3, ['sleep', '1']))).toEqual([
      { path: 'task.command[1]', before: '600', after: '1' },
      { path: 'count', before: 2, after: 3 },
    ]);
    expect(diffJobSpecs(undefined, service(1))).toEqual([{ path: 'job', after: service(1) }]);
  });
});

describe('shoal run as a job file', () => {
  it('is a valid job: a service when it restarts always, a batch job otherwise, replicas as its count', () => {
    const task = {
      name: 'web',
      driver: 'exec' as const,
      command: ['sleep', '60'],
      cpuMillis: 250,
      memoryBytes: 100 * MiB,
      priority: 50,
      env: { A: '1' },
      constraints: { zone: 'a' },
    };
    const batch = jobFromTaskSpec(task, 3, false);
    expect(jobSpecSchema.safeParse(batch.job).success).toBe(true);
    expect(batch.job).toEqual({
      name: 'web',
      type: 'batch',
      constraints: { zone: 'a' },
      task: { driver: 'exec', command: ['sleep', '60'], env: { A: '1' }, cpuMillis: 250, memoryMiB: 100 },
      count: 3,
    });
    const always = {
      ...task,
      restart: { policy: 'always' as const, maxRestarts: null, delayMs: 1000 },
      jobRunningMax: 2,
    };
    const service = jobFromTaskSpec(always, 1, true);
    expect(service.job).toMatchObject({ type: 'service', groups: [{ name: 'web', count: 1, gang: true }] });
    expect(jobSpecSchema.safeParse(service.job).success).toBe(true);
    expect(service.omitted).toEqual(['--max-running']);
  });
});
