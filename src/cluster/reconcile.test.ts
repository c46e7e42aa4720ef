import { describe, expect, it } from 'vitest';
import { seededRandom, type Random } from '../shared/random.ts';
import {
  crashLoopWindowMs,
  occupiesSlot,
  reconcileJob,
  type GroupRollout,
  type InstanceTask,
  type ReconcileActions,
  type ReconcileGroup,
  type ReconcileInput,
} from './reconcile.ts';
import { isTerminal, restartDelayMsMax, type TaskState } from './task.ts';

const nowMs = 100_000_000;
const minuteMs = 60_000;

function task(id: string, fields: Partial<InstanceTask> = {}): InstanceTask {
  return {
    id,
    group: 'web',
    slot: 0,
    version: 1,
    nodeId: 'n1',
    state: 'running',
    desired: 'run',
    updatedAtMs: nowMs - 60 * minuteMs,
    ...fields,
  };
}

/** A group as tests give it: currentVersions left out means specVersion up to the job's version. */
type TestGroup = Omit<ReconcileGroup, 'currentVersions'> & { readonly currentVersions?: readonly number[] };

function group(name: string, count: number | null, fields: Partial<ReconcileGroup> = {}): TestGroup {
  return { name, count, specVersion: 1, eligibleNodeIds: [], ...fields };
}

/** The job versions from `from` to `to`, both included. */
function versionRange(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
}

function reconcile(
  fields: Omit<Partial<ReconcileInput>, 'groups'> & { groups?: readonly TestGroup[] },
): ReconcileActions {
  const version = fields.version ?? 1;
  const groups = (fields.groups ?? [group('web', 3)]).map((g) => ({
    ...g,
    currentVersions: g.currentVersions ?? versionRange(g.specVersion, version),
  }));
  return reconcileJob({
    type: 'service',
    stopped: false,
    reschedule: { policy: 'always', attempts: null, delayMs: 10_000 },
    tasks: [],
    nowMs,
    ...fields,
    version,
    groups,
  });
}

/** Starts as group[slot] (system: group@node), with their delay when they have one. */
function starts(actions: ReconcileActions): string[] {
  return actions.start.map(
    (start) =>
      `${start.group}${start.nodeId === undefined ? `[${start.slot}]` : `@${start.nodeId}`}` +
      (start.notBeforeMs === null ? '' : ` +${start.notBeforeMs - nowMs}ms`),
  );
}

const stops = (actions: ReconcileActions): string[] => actions.stop.map((stop) => stop.taskId);

describe('reconcileJob: service', () => {
  it('starts count instances of a new job, at once', () => {
    const actions = reconcile({ groups: [group('web', 3), group('db', 1)] });
    expect(starts(actions)).toEqual(['web[0]', 'web[1]', 'web[2]', 'db[0]']);
    expect(actions.start.every((start) => start.reason === 'new instance')).toBe(true);
    expect(actions.stop).toEqual([]);
    expect(actions.done).toEqual([]);
  });

  it('adds only the new slots when count is raised', () => {
    const tasks = [task('a', { slot: 0 }), task('b', { slot: 1 })];
    expect(starts(reconcile({ groups: [group('web', 4)], tasks }))).toEqual(['web[2]', 'web[3]']);
  });

  it('stops the highest slots when count is lowered', () => {
    const tasks = [0, 1, 2, 3].map((slot) => task(`t${slot}`, { slot }));
    const actions = reconcile({ groups: [group('web', 2)], tasks });
    expect(actions.start).toEqual([]);
    expect(actions.stop).toEqual([
      { taskId: 't2', reason: 'count lowered to 2' },
      { taskId: 't3', reason: 'count lowered to 2' },
    ]);
  });

  it('replaces a lost instance at once, even in a crash loop', () => {
    const tasks = [
      task('a', { slot: 1 }),
      task('f', { slot: 0, state: 'failed', updatedAtMs: nowMs - 2 * minuteMs }),
      task('l', { slot: 0, state: 'lost', updatedAtMs: nowMs - minuteMs }),
    ];
    const actions = reconcile({ groups: [group('web', 2)], tasks });
    expect(actions.start).toEqual([
      { group: 'web', slot: 0, notBeforeMs: null, reason: 'replaces l (lost with its node)', replaces: 'l' },
    ]);
  });

  it('backs off a crash loop, doubling per failure within the window, and not for old ones', () => {
    const failures = (agesMinutes: number[]): InstanceTask[] =>
      agesMinutes.map((age, i) => task(`f${i}`, { state: 'failed', updatedAtMs: nowMs - age * minuteMs }));
    const one = (tasks: InstanceTask[]): string[] => starts(reconcile({ groups: [group('web', 1)], tasks }));
    expect(one(failures([1]))).toEqual(['web[0] +10000ms']);
    expect(one(failures([1, 2, 3]))).toEqual(['web[0] +40000ms']);
    // Failures before the window do not count: a service that ran for long comes back after the base delay.
    expect(one(failures([1, 30, 40, 50]))).toEqual(['web[0] +10000ms']);
    // Its previous instance ended long ago: at once.
    expect(one(failures([crashLoopWindowMs / minuteMs + 1]))).toEqual(['web[0]']);
    expect(one(failures([1, 1, 1, 1, 1, 1, 1, 1, 1, 1]))).toEqual([`web[0] +${restartDelayMsMax}ms`]);
    const finished = reconcile({
      groups: [group('web', 1)],
      tasks: [task('x', { state: 'finished', updatedAtMs: nowMs - minuteMs })],
    });
    expect(finished.start[0]?.reason).toMatch(/^replaces x \(finished; 1× in 10 min: backoff 10 s\)$/);
  });

  it('replaces instances of an older spec, and keeps those of a newer job version with the same spec', () => {
    const tasks = [task('a', { slot: 0, version: 2 }), task('b', { slot: 1, version: 3 })];
    const actions = reconcile({ version: 4, groups: [group('web', 2, { specVersion: 3 })], tasks });
    expect(actions.stop).toEqual([{ taskId: 'a', reason: 'replaced by version 3' }]);
    expect(actions.start).toEqual([
      {
        group: 'web',
        slot: 0,
        notBeforeMs: null,
        reason: 'version 3 (replaces a at version 2)',
        replaces: 'a',
      },
    ]);
  });

  it('keeps the newest of duplicate occupants (version, then id) and stops the rest', () => {
    const tasks = [
      task('c', { slot: 0, version: 1 }),
      task('a', { slot: 0, version: 2 }),
      task('b', { slot: 0, version: 2 }),
    ];
    const actions = reconcile({ version: 2, groups: [group('web', 1)], tasks });
    expect(actions.stop).toEqual([
      { taskId: 'a', reason: 'duplicate of b in slot 0' },
      { taskId: 'c', reason: 'duplicate of b in slot 0' },
    ]);
    expect(actions.start).toEqual([]);
  });

  it('does not count a stopping task as an occupant, nor stop it again; moving tasks keep their slot', () => {
    const tasks = [
      task('k', { slot: 0, desired: 'kill' }),
      task('m', { slot: 1, desired: 'move' }),
      task('p', { slot: 2, desired: 'preempt', state: 'pending' }),
    ];
    const actions = reconcile({ groups: [group('web', 3)], tasks });
    expect(actions.stop).toEqual([]);
    expect(actions.start).toEqual([
      { group: 'web', slot: 0, notBeforeMs: null, reason: 'replaces k (killed)', replaces: 'k' },
    ]);
  });

  it('stops every live task of a stopped job, and starts nothing', () => {
    const tasks = [
      task('b', { slot: 1 }),
      task('a', { slot: 0, state: 'pending', desired: 'move' }),
      task('k', { slot: 2, desired: 'kill' }),
      task('f', { slot: 2, state: 'failed' }),
      task('o', { group: 'old' }),
    ];
    const actions = reconcile({ stopped: true, tasks });
    expect(actions.start).toEqual([]);
    expect(actions.stop).toEqual([
      { taskId: 'a', reason: 'job stopped' },
      { taskId: 'b', reason: 'job stopped' },
      { taskId: 'o', reason: 'job stopped' },
    ]);
  });

  it('stops the tasks of a group the job no longer has', () => {
    const actions = reconcile({ groups: [group('web', 1)], tasks: [task('a'), task('o', { group: 'old' })] });
    expect(actions.stop).toEqual([{ taskId: 'o', reason: 'group old is no longer in the job' }]);
  });

  it('does not restart a slot under policy never, and reports it done', () => {
    const tasks = [
      task('f', { slot: 0, state: 'failed' }),
      task('l', { slot: 1, state: 'lost' }),
      task('x', { slot: 2, state: 'finished' }),
      task('k', { slot: 3, state: 'killed' }),
    ];
    const actions = reconcile({
      groups: [group('web', 5)],
      reschedule: { policy: 'never', attempts: null, delayMs: 0 },
      tasks,
    });
    expect(starts(actions)).toEqual(['web[3]', 'web[4]']);
    expect(actions.done).toEqual([
      { group: 'web', slot: 0, outcome: 'failed' },
      { group: 'web', slot: 1, outcome: 'failed' },
      { group: 'web', slot: 2, outcome: 'finished' },
    ]);
  });

  it('caps reschedules after failures at the current spec, not counting lost instances', () => {
    const history = [
      task('f1', { state: 'failed', updatedAtMs: nowMs - 3 * minuteMs }),
      task('l1', { state: 'lost', updatedAtMs: nowMs - 2 * minuteMs }),
      task('f2', { state: 'failed', updatedAtMs: nowMs - minuteMs }),
    ];
    const run = (attempts: number, specVersion = 1): ReconcileActions =>
      reconcile({
        version: specVersion,
        groups: [group('web', 1, { specVersion })],
        reschedule: { policy: 'always', attempts, delayMs: 0 },
        tasks: history,
      });
    expect(starts(run(2))).toEqual(['web[0]']);
    expect(run(1).done).toEqual([{ group: 'web', slot: 0, outcome: 'failed' }]);
    // A new spec starts afresh.
    expect(run(1, 2).start).toEqual([{ group: 'web', slot: 0, notBeforeMs: null, reason: 'version 2' }]);
  });
});

describe('reconcileJob: current versions', () => {
  it('after a revert keeps instances of the version it went back to and replaces the others', () => {
    // Version 5 reverts to version 3's spec: 3 and 5 are current, 4 is not.
    const tasks = [
      task('a', { slot: 0, version: 3 }),
      task('b', { slot: 1, version: 4 }),
      task('c', { slot: 2, version: 5 }),
      // Slot 3's history: a failure at version 3 counts (backoff); slot 4 only had version 4's.
      task('f', { slot: 3, version: 3, state: 'failed', updatedAtMs: nowMs - minuteMs }),
      task('g', { slot: 4, version: 4, state: 'failed', updatedAtMs: nowMs - minuteMs }),
    ];
    const actions = reconcile({
      version: 5,
      groups: [group('web', 5, { specVersion: 5, currentVersions: [3, 5] })],
      tasks,
    });
    expect(actions.stop).toEqual([{ taskId: 'b', reason: 'replaced by version 5' }]);
    expect(starts(actions)).toEqual(['web[1]', 'web[3] +10000ms', 'web[4]']);
    expect(actions.start.map((start) => start.reason)).toEqual([
      'version 5 (replaces b at version 4)',
      'replaces f (failed; 1× in 10 min: backoff 10 s)',
      'version 5',
    ]);
  });

  it('prefers a current occupant to a newer old one (batch and system too)', () => {
    const tasks = [task('a', { version: 3 }), task('b', { version: 4 })];
    const groups = [group('web', 1, { specVersion: 5, currentVersions: [3, 5] })];
    for (const type of ['service', 'batch'] as const)
      expect(reconcile({ type, version: 5, groups, tasks })).toMatchObject({
        start: [],
        stop: [{ taskId: 'b' }],
      });
    const system = reconcile({
      type: 'system',
      version: 5,
      groups: [group('web', null, { specVersion: 5, currentVersions: [3, 5], eligibleNodeIds: ['n1'] })],
      tasks,
    });
    expect(system).toEqual({
      start: [],
      stop: [{ taskId: 'b', reason: 'duplicate of a in node n1' }],
      done: [],
    });
  });
});

describe('reconcileJob: service rollouts', () => {
  const rollout = (fields: Partial<GroupRollout> = {}): GroupRollout => ({
    maxParallel: 2,
    order: 'stop-first',
    canary: 0,
    promoted: true,
    active: true,
    healthyTaskIds: new Set(),
    canaryTaskIds: new Set(),
    startedAtMs: 0,
    ...fields,
  });
  /** Group web at version 2 (version 1 old), count slots, a task per entry of `versions` (null: none). */
  const roll = (
    versions: readonly (number | null)[],
    fields: Partial<GroupRollout> = {},
    extra: InstanceTask[] = [],
  ): ReconcileActions => {
    const tasks = versions.flatMap((version, slot) =>
      version === null ? [] : [task(`s${slot}v${version}`, { slot, version })],
    );
    return reconcile({
      version: 2,
      groups: [group('web', versions.length, { specVersion: 2, rollout: rollout(fields) })],
      tasks: [...tasks, ...extra],
    });
  };

  it('without a rollout, a slot holding a current and an old instance keeps the current one', () => {
    const tasks = [task('old', { version: 1 }), task('new', { version: 2 })];
    const actions = reconcile({ version: 2, groups: [group('web', 1, { specVersion: 2 })], tasks });
    expect(actions).toEqual({
      start: [],
      stop: [{ taskId: 'old', reason: 'replaced by version 2' }],
      done: [],
    });
  });

  it('keeps the newest current and the newest old occupant of a slot, stopping other duplicates', () => {
    const extra = [task('s0v1-dup', { slot: 0, version: 1 }), task('s0v2-dup', { slot: 0, version: 2 })];
    const actions = roll([1, 1], { maxParallel: 1 }, [task('s0v2', { slot: 0, version: 2 }), ...extra]);
    expect(actions.stop).toEqual([
      { taskId: 's0v1', reason: 'duplicate of s0v1-dup in slot 0' },
      { taskId: 's0v2', reason: 'duplicate of s0v2-dup in slot 0' },
    ]);
    // The unhealthy current instance in slot 0 holds the only replacement allowed: slot 1 waits.
    expect(actions.start).toEqual([]);
  });

  it('a new instance that failed since the rollout began holds its share: a crashing version stops at maxParallel', () => {
    // Slot 0 was replaced and its new instance failed (it waits for its backoff); slot 1's is pending.
    const failed = task('s0v2', { slot: 0, version: 2, state: 'failed', updatedAtMs: 50 });
    const actions = roll([null, 2, 1, 1], { maxParallel: 2, startedAtMs: 10 }, [failed]);
    expect(stops(actions)).toEqual([]);
    expect(actions.start.map((start) => start.slot)).toEqual([0]);
    // A failure from before this rollout (an earlier deployment's) holds nothing.
    const earlier = roll([null, 2, 1, 1], { maxParallel: 2, startedAtMs: 100 }, [failed]);
    expect(stops(earlier)).toEqual(['s2v1']);
  });

  it('stop-first: replaces at most maxParallel old instances, less those not healthy yet', () => {
    const fresh = roll([1, 1, 1, 1, 1]);
    expect(stops(fresh)).toEqual(['s0v1', 's1v1']);
    expect(fresh.start).toEqual([
      {
        group: 'web',
        slot: 0,
        notBeforeMs: null,
        reason: 'version 2 (replaces s0v1 at version 1)',
        replaces: 's0v1',
      },
      {
        group: 'web',
        slot: 1,
        notBeforeMs: null,
        reason: 'version 2 (replaces s1v1 at version 1)',
        replaces: 's1v1',
      },
    ]);
    // Slot 0 is replaced and healthy, slot 1 replaced and not yet healthy: one more.
    const next = roll([2, 2, 1, 1, 1], { healthyTaskIds: new Set(['s0v2']) });
    expect(stops(next)).toEqual(['s2v1']);
    expect(starts(next)).toEqual(['web[2]']);
    expect(roll([2, 2, 1, 1, 1])).toEqual({ start: [], stop: [], done: [] });
  });

  it('start-first: starts replacements beside the old instances, which stop once those are healthy', () => {
    const fresh = roll([1, 1, 1], { order: 'start-first' });
    expect(fresh.stop).toEqual([]);
    expect(fresh.start).toEqual([
      {
        group: 'web',
        slot: 0,
        notBeforeMs: null,
        reason: 'version 2 (beside s0v1 at version 1, until healthy)',
        replaces: 's0v1',
      },
      {
        group: 'web',
        slot: 1,
        notBeforeMs: null,
        reason: 'version 2 (beside s1v1 at version 1, until healthy)',
        replaces: 's1v1',
      },
    ]);
    const beside = [task('s0v2', { slot: 0, version: 2 }), task('s1v2', { slot: 1, version: 2 })];
    const waiting = roll([1, 1, 1], { order: 'start-first' }, beside);
    expect(waiting).toEqual({ start: [], stop: [], done: [] });
    const oneHealthy = roll([1, 1, 1], { order: 'start-first', healthyTaskIds: new Set(['s0v2']) }, beside);
    expect(oneHealthy.stop).toEqual([{ taskId: 's0v1', reason: 'replaced by version 2' }]);
    expect(starts(oneHealthy)).toEqual(['web[2]']);
  });

  it('a paused or failed rollout replaces nothing, but still fills empty slots and retires replaced ones', () => {
    const paused = roll(
      [1, null, 1],
      { active: false, order: 'start-first', healthyTaskIds: new Set(['s0v2']) },
      [task('s0v2', { slot: 0, version: 2 })],
    );
    expect(paused.stop).toEqual([{ taskId: 's0v1', reason: 'replaced by version 2' }]);
    expect(paused.start).toEqual([{ group: 'web', slot: 1, notBeforeMs: null, reason: 'new instance' }]);
  });

  it('starts canaries beside the old instances of the first slots, beyond maxParallel, and nothing else', () => {
    const fresh = roll([null, 1, 1, 1, 1], { canary: 3, promoted: false, maxParallel: 1 });
    expect(fresh.stop).toEqual([]);
    expect(fresh.start).toEqual([
      { group: 'web', slot: 0, notBeforeMs: null, reason: 'new instance' },
      {
        group: 'web',
        slot: 1,
        notBeforeMs: null,
        reason: 'canary for version 2 (beside s1v1 at version 1)',
        canary: true,
      },
      {
        group: 'web',
        slot: 2,
        notBeforeMs: null,
        reason: 'canary for version 2 (beside s2v1 at version 1)',
        canary: true,
      },
      {
        group: 'web',
        slot: 3,
        notBeforeMs: null,
        reason: 'canary for version 2 (beside s3v1 at version 1)',
        canary: true,
      },
    ]);
    // Canaries already running count, healthy or not, and their old instances stay until promotion.
    const canaries = [task('c2', { slot: 2, version: 2 }), task('c4', { slot: 4, version: 2 })];
    const some = roll(
      [1, 1, 1, 1, 1],
      {
        canary: 3,
        promoted: false,
        healthyTaskIds: new Set(['c2']),
        canaryTaskIds: new Set(['c2', 'c4']),
      },
      canaries,
    );
    expect(some.stop).toEqual([]);
    expect(some.start).toMatchObject([{ slot: 0, canary: true }]);
    // Paused: no canary.
    expect(roll([1, 1], { canary: 1, promoted: false, active: false })).toEqual({
      start: [],
      stop: [],
      done: [],
    });
  });

  it('once promoted, retires the old instances of healthy canaries and rolls the rest within the budget', () => {
    const canaries = [task('c0', { slot: 0, version: 2 }), task('c1', { slot: 1, version: 2 })];
    const actions = roll(
      [1, 1, 1, 1],
      {
        canary: 2,
        promoted: true,
        maxParallel: 2,
        healthyTaskIds: new Set(['c0']),
        canaryTaskIds: new Set(['c0', 'c1']),
      },
      canaries,
    );
    expect(actions.stop).toEqual([
      { taskId: 's0v1', reason: 'replaced by version 2' },
      { taskId: 's2v1', reason: 'replaced by version 2' },
    ]);
    // c1, not yet healthy, holds one of the two replacements.
    expect(starts(actions)).toEqual(['web[2]']);
  });

  it('is ignored by batch jobs: they replace at once', () => {
    const tasks = [0, 1, 2].map((slot) => task(`t${slot}`, { slot, version: 1 }));
    const actions = reconcile({
      type: 'batch',
      version: 2,
      groups: [group('web', 3, { specVersion: 2, rollout: rollout({ maxParallel: 1 }) })],
      tasks,
    });
    expect(stops(actions)).toEqual(['t0', 't1', 't2']);
    expect(starts(actions)).toEqual(['web[0]', 'web[1]', 'web[2]']);
  });
});

describe('reconcileJob: batch', () => {
  const batch = (fields: Parameters<typeof reconcile>[0]): ReconcileActions =>
    reconcile({ type: 'batch', ...fields });

  it('does not rerun a finished slot, but reruns one finished at an older spec', () => {
    const tasks = [
      task('a', { slot: 0, state: 'finished', version: 2 }),
      task('b', { slot: 1, state: 'finished', version: 1 }),
      task('c', { slot: 1, state: 'failed', version: 2, updatedAtMs: nowMs - 5 * minuteMs }),
    ];
    const actions = batch({ version: 2, groups: [group('web', 3, { specVersion: 2 })], tasks });
    expect(actions.done).toEqual([{ group: 'web', slot: 0, outcome: 'finished' }]);
    expect(starts(actions)).toEqual(['web[1] +10000ms', 'web[2]']);
  });

  it('reschedules a failed slot until its attempts run out, then reports it failed', () => {
    const run = (failures: number): ReconcileActions =>
      batch({
        groups: [group('web', 1)],
        reschedule: { policy: 'always', attempts: 2, delayMs: 1000 },
        tasks: Array.from({ length: failures }, (_, i) =>
          task(`f${i}`, { state: 'failed', updatedAtMs: nowMs - (failures - i) * 1000 }),
        ),
      });
    expect(starts(run(1))).toEqual(['web[0] +1000ms']);
    expect(run(2).start[0]).toMatchObject({ notBeforeMs: nowMs + 2000, replaces: 'f1' });
    expect(run(3).start).toEqual([]);
    expect(run(3).done).toEqual([{ group: 'web', slot: 0, outcome: 'failed' }]);
  });

  it('does not rerun a killed slot, even while its task is still stopping', () => {
    const tasks = [task('k', { slot: 0, state: 'killed' }), task('s', { slot: 1, desired: 'kill' })];
    const actions = batch({ groups: [group('web', 2)], tasks });
    expect(actions.start).toEqual([]);
    expect(actions.stop).toEqual([]);
    expect(actions.done).toEqual([
      { group: 'web', slot: 0, outcome: 'failed' },
      { group: 'web', slot: 1, outcome: 'failed' },
    ]);
  });

  it('reschedules a lost slot at once, unless the policy is never', () => {
    const tasks = [task('l', { state: 'lost', updatedAtMs: nowMs })];
    expect(starts(batch({ groups: [group('web', 1)], tasks }))).toEqual(['web[0]']);
    const never = batch({
      groups: [group('web', 1)],
      reschedule: { policy: 'never', attempts: null, delayMs: 0 },
      tasks,
    });
    expect(never.start).toEqual([]);
    expect(never.done).toEqual([{ group: 'web', slot: 0, outcome: 'failed' }]);
  });
});

describe('reconcileJob: system', () => {
  const system = (eligibleNodeIds: string[], tasks: InstanceTask[], specVersion = 1): ReconcileActions =>
    reconcile({
      type: 'system',
      version: specVersion,
      groups: [group('agent', null, { eligibleNodeIds, specVersion })],
      tasks,
    });
  const on = (id: string, nodeId: string, fields: Partial<InstanceTask> = {}): InstanceTask =>
    task(id, { group: 'agent', nodeId, ...fields });

  it('runs one instance pinned to each eligible node, in the order given', () => {
    const actions = system(['n3', 'n1', 'n2'], [on('a', 'n1')]);
    expect(actions.start).toEqual([
      { group: 'agent', slot: 0, nodeId: 'n3', notBeforeMs: null, reason: 'new instance' },
      { group: 'agent', slot: 0, nodeId: 'n2', notBeforeMs: null, reason: 'new instance' },
    ]);
    expect(system(['n1'], [on('a', 'n1'), on('b', 'n1')]).stop).toEqual([
      { taskId: 'a', reason: 'duplicate of b in node n1' },
    ]);
  });

  it('stops the instance of a node that is no longer eligible, and starts none there', () => {
    const actions = system(['n1'], [on('a', 'n1'), on('b', 'n2')]);
    expect(actions.stop).toEqual([{ taskId: 'b', reason: 'node no longer eligible' }]);
    expect(actions.start).toEqual([]);
  });

  it('does not replace an instance lost with its node elsewhere; brings it back when the node returns', () => {
    const lost = on('b', 'n2', { state: 'lost', updatedAtMs: nowMs - minuteMs });
    expect(system(['n1'], [on('a', 'n1'), lost])).toEqual({ start: [], stop: [], done: [] });
    expect(system(['n1', 'n2'], [on('a', 'n1'), lost]).start).toEqual([
      {
        group: 'agent',
        slot: 0,
        nodeId: 'n2',
        notBeforeMs: null,
        reason: 'replaces b (lost with its node)',
        replaces: 'b',
      },
    ]);
  });

  it('backs off after failures and replaces old versions on their node', () => {
    const failed = on('f', 'n1', { state: 'failed', updatedAtMs: nowMs - minuteMs });
    expect(starts(system(['n1'], [failed]))).toEqual(['agent@n1 +10000ms']);
    const actions = system(['n1'], [on('a', 'n1', { version: 1 })], 2);
    expect(stops(actions)).toEqual(['a']);
    expect(starts(actions)).toEqual(['agent@n1']);
  });
});

// ---- properties: a seeded simulation of a job's tasks, its nodes and its user ----

interface SimTask {
  id: string;
  group: string;
  slot: number;
  version: number;
  nodeId: string | null;
  state: TaskState;
  desired: 'run' | 'kill' | 'move' | 'preempt';
  updatedAtMs: number;
  notBeforeMs: number | null;
}

interface SimGroup {
  name: string;
  count: number;
  specVersion: number;
}

interface Sim {
  readonly type: ReconcileInput['type'];
  readonly random: Random;
  version: number;
  stopped: boolean;
  groups: SimGroup[];
  /** Node id → up (false: down) and draining; both make it ineligible. */
  nodes: Map<string, { up: boolean; draining: boolean }>;
  reschedule: ReconcileInput['reschedule'];
  tasks: SimTask[];
  nowMs: number;
  nextId: number;
}

function pick<T>(random: Random, items: readonly T[]): T | undefined {
  return items.length === 0 ? undefined : items[random.int(0, items.length)];
}

/** Group g1 has a constraint n1 does not match; otherwise every up, undrained node is eligible. */
function eligible(sim: Sim, groupIndex: number): string[] {
  return [...sim.nodes]
    .filter(([id, node]) => node.up && !node.draining && (groupIndex === 0 || id !== 'n1'))
    .map(([id]) => id);
}

function simInput(sim: Sim, tasks: readonly InstanceTask[] = sim.tasks): ReconcileInput {
  return {
    type: sim.type,
    version: sim.version,
    stopped: sim.stopped,
    groups: sim.groups.map((g, index) => ({
      name: g.name,
      count: sim.type === 'system' ? null : g.count,
      specVersion: g.specVersion,
      currentVersions: versionRange(g.specVersion, sim.version),
      eligibleNodeIds: sim.type === 'system' ? eligible(sim, index) : [],
    })),
    reschedule: sim.reschedule,
    tasks,
    nowMs: sim.nowMs,
  };
}

function apply(sim: Sim, actions: ReconcileActions): void {
  for (const stop of actions.stop) {
    const target = sim.tasks.find((t) => t.id === stop.taskId);
    if (target === undefined || !occupiesSlot(target))
      throw new Error(`stop of ${stop.taskId}: not occupying`);
    target.desired = 'kill';
  }
  for (const start of actions.start) {
    sim.tasks.push({
      id: `t${String(sim.nextId++).padStart(6, '0')}`,
      group: start.group,
      slot: start.slot,
      version: sim.version,
      nodeId: start.nodeId ?? null,
      state: 'pending',
      desired: 'run',
      updatedAtMs: sim.nowMs,
      notBeforeMs: start.notBeforeMs,
    });
  }
}

/** Time passes every backoff; pending and requeued tasks get placed and run. */
function runPending(sim: Sim): void {
  const upNodes = [...sim.nodes].filter(([, node]) => node.up && !node.draining).map(([id]) => id);
  for (const t of sim.tasks) {
    if (t.state === 'pending' && t.notBeforeMs !== null) sim.nowMs = Math.max(sim.nowMs, t.notBeforeMs);
  }
  for (const t of sim.tasks) {
    if (occupiesSlot(t) && (t.desired === 'move' || t.desired === 'preempt')) {
      t.desired = 'run';
      t.state = 'pending';
      if (sim.type !== 'system') t.nodeId = null;
    }
    if (t.state !== 'pending' || t.desired !== 'run') continue;
    if (sim.type !== 'system') t.nodeId = pick(sim.random, upNodes) ?? null;
    if (t.nodeId === null) continue;
    t.state = 'running';
    t.notBeforeMs = null;
    t.updatedAtMs = sim.nowMs;
  }
}

function end(sim: Sim, t: SimTask, state: TaskState): void {
  t.state = state;
  t.updatedAtMs = sim.nowMs;
}

/** One random thing happening to the job, its tasks, its nodes, or the clock. */
function randomEvent(sim: Sim): void {
  const { random } = sim;
  const live = sim.tasks.filter((t) => !isTerminal(t.state));
  const occupying = live.filter((t) => t.desired !== 'kill');
  const roll = random.int(0, 17);
  if (roll <= 3) {
    const t = pick(random, live);
    if (t === undefined) return;
    const states: TaskState[] =
      t.desired === 'kill' ? ['killed'] : ['finished', 'failed', 'failed', 'lost', 'killed'];
    end(sim, t, pick(random, states) ?? 'failed');
  } else if (roll === 4) {
    for (const t of live) if (t.desired === 'kill' && random.next() < 0.7) end(sim, t, 'killed');
  } else if (roll === 5) {
    const t = pick(random, occupying);
    if (t !== undefined) t.desired = 'kill';
  } else if (roll === 6) {
    const t = pick(random, occupying);
    if (t !== undefined) t.desired = random.next() < 0.5 ? 'move' : 'preempt';
  } else if (roll === 7) {
    const [id, node] = pick(random, [...sim.nodes]) ?? [];
    if (id === undefined || node === undefined) return;
    node.up = !node.up;
    if (!node.up) for (const t of live) if (t.nodeId === id) end(sim, t, 'lost');
  } else if (roll === 8) {
    const node = pick(random, [...sim.nodes.values()]);
    if (node !== undefined) node.draining = !node.draining;
  } else if (roll === 9) {
    const g = pick(random, sim.groups);
    if (g !== undefined) g.count = random.int(0, 6);
  } else if (roll === 10) {
    sim.version++;
    const g = pick(random, sim.groups);
    if (g !== undefined) g.specVersion = sim.version;
  } else if (roll === 11) {
    sim.version++;
  } else if (roll === 12) {
    // A start applied twice (a retry across a leader change): two tasks in one slot.
    const t = pick(random, occupying);
    const version = random.next() < 0.5 ? sim.version : (t?.version ?? 0);
    if (t !== undefined) sim.tasks.push({ ...t, id: `t${String(sim.nextId++).padStart(6, '0')}`, version });
  } else if (roll <= 14) {
    sim.nowMs += random.int(0, 20 * minuteMs);
  } else if (roll === 15) {
    if (random.next() < 0.3) sim.stopped = !sim.stopped;
  } else {
    // The state forgets old terminal tasks.
    sim.tasks = sim.tasks.filter((t) => !isTerminal(t.state) || t.updatedAtMs >= sim.nowMs - 30 * minuteMs);
  }
}

function newSim(seed: number, type: Sim['type']): Sim {
  const random = seededRandom(seed);
  const groups = Array.from({ length: random.int(1, 4) }, (_, i) => ({
    name: `g${i}`,
    count: random.int(0, 5),
    specVersion: 1,
  }));
  const nodeCount = random.int(1, 6);
  const policy = random.next() < 0.8 ? 'always' : 'never';
  return {
    type,
    random,
    version: 1,
    stopped: false,
    groups,
    nodes: new Map(Array.from({ length: nodeCount }, (_, i) => [`n${i + 1}`, { up: true, draining: false }])),
    reschedule: {
      policy,
      attempts: random.next() < 0.5 ? null : random.int(0, 4),
      delayMs: random.int(0, 30_000),
    },
    tasks: [],
    nowMs: 1_000_000,
    nextId: 0,
  };
}

/** What must hold once the reconciler's actions are applied: the job is where it should be. */
function checkConverged(sim: Sim, actions: ReconcileActions): void {
  const occupying = sim.tasks.filter(occupiesSlot);
  if (sim.stopped) {
    if (occupying.length > 0)
      throw new Error(`stopped job still runs ${occupying.map((t) => t.id).join(',')}`);
    return;
  }
  const names = new Set(sim.groups.map((g) => g.name));
  const stray = occupying.filter((t) => !names.has(t.group));
  if (stray.length > 0) throw new Error(`tasks of removed groups run: ${stray.map((t) => t.id).join(',')}`);
  sim.groups.forEach((g, index) => {
    const mine = occupying.filter((t) => t.group === g.name);
    const old = mine.filter((t) => t.version < g.specVersion);
    if (old.length > 0) throw new Error(`${g.name}: old versions run: ${old.map((t) => t.id).join(',')}`);
    if (sim.type === 'system') {
      const want = eligible(sim, index).sort().join(',');
      const have = mine
        .map((t) => t.nodeId ?? 'null')
        .sort()
        .join(',');
      if (have !== want) throw new Error(`${g.name}: instances on [${have}], eligible [${want}]`);
      return;
    }
    const slots = mine.map((t) => t.slot).sort((a, b) => a - b);
    const doneSlots = actions.done.filter((d) => d.group === g.name).map((d) => d.slot);
    const all = [...slots, ...doneSlots].sort((a, b) => a - b);
    const expected = Array.from({ length: g.count }, (_, i) => i);
    if (all.join(',') !== expected.join(','))
      throw new Error(
        `${g.name}: running slots [${slots.join(',')}] and done [${doneSlots.join(',')}], count ${g.count}`,
      );
    const reschedulesAlways = sim.reschedule.policy === 'always' && sim.reschedule.attempts === null;
    if (sim.type === 'service' && reschedulesAlways && mine.length !== g.count)
      throw new Error(`${g.name}: ${mine.length} instances for count ${g.count}`);
  });
}

function checkSane(sim: Sim, actions: ReconcileActions): void {
  for (const action of [...actions.start, ...actions.stop])
    if (action.reason.length === 0) throw new Error('an action without a reason');
  if (sim.stopped && actions.start.length > 0) throw new Error('a stopped job starts instances');
  if (sim.type === 'system')
    for (const start of actions.start) {
      const index = sim.groups.findIndex((g) => g.name === start.group);
      if (start.nodeId === undefined || !eligible(sim, index).includes(start.nodeId))
        throw new Error(`start on ineligible node ${start.nodeId ?? 'none'}`);
    }
}

const summary = (actions: ReconcileActions | ReconcileActions['done']): string => JSON.stringify(actions);

function simulate(seed: number, type: Sim['type'], steps: number): void {
  const sim = newSim(seed, type);
  for (let step = 0; step < steps; step++) {
    try {
      const events = sim.random.int(1, 4);
      for (let i = 0; i < events; i++) randomEvent(sim);
      const actions = reconcileJob(simInput(sim));
      checkSane(sim, actions);
      // The answer does not depend on the order the state lists tasks in.
      const shuffled = [...sim.tasks];
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = sim.random.int(0, i + 1);
        [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
      }
      if (summary(reconcileJob(simInput(sim, shuffled))) !== summary(actions))
        throw new Error('the actions depend on the order of the tasks');
      apply(sim, actions);
      checkConverged(sim, actions);
      const again = reconcileJob(simInput(sim));
      if (again.start.length + again.stop.length > 0) throw new Error(`not idempotent: ${summary(again)}`);
      runPending(sim);
      const later = reconcileJob(simInput(sim));
      if (later.start.length + later.stop.length > 0)
        throw new Error(`not stable once backoffs passed: ${summary(later)}`);
      if (summary(later.done) !== summary(actions.done)) throw new Error('done changed without an event');
    } catch (error) {
      throw new Error(
        `${type} seed ${seed} step ${step}: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
  }
}

describe('reconcileJob: properties', () => {
  for (const type of ['service', 'batch', 'system'] as const) {
    it(`${type}: converges after every step, is idempotent and order-independent (200 seeds × 50 steps)`, () => {
      for (let seed = 1; seed <= 200; seed++) simulate(seed, type, 50);
    });
  }
});
