import { describe, expect, it } from 'vitest';
import {
  applyDeploymentProgress,
  deploymentProgress,
  groupRollout,
  needsPromotion,
  promoteDeployment,
  type DeploymentGroupRecord,
  type DeploymentProgress,
  type DeploymentRecord,
  type DeploymentTask,
} from './deployment.ts';
import { updatePolicyDefaults, type UpdatePolicy } from './job.ts';

const startMs = 1_000_000;
const policy: UpdatePolicy = {
  ...updatePolicyDefaults,
  maxParallel: 2,
  minHealthyTimeMs: 10_000,
  healthyDeadlineMs: 60_000,
  progressDeadlineMs: 120_000,
};

function groupRecord(fields: Partial<DeploymentGroupRecord> = {}): DeploymentGroupRecord {
  return {
    desiredTotal: 2,
    desiredCanaries: 0,
    promoted: true,
    healthyTaskIds: [],
    unhealthy: [],
    canaryTaskIds: [],
    ...fields,
  };
}

function deployment(
  fields: Partial<DeploymentRecord> = {},
  web: Partial<DeploymentGroupRecord> = {},
): DeploymentRecord {
  return {
    id: 'd7',
    namespace: 'default',
    job: 'shop',
    jobVersion: 2,
    stableVersion: 1,
    policy,
    status: 'running',
    statusReason: '',
    groups: { web: groupRecord(web) },
    createdAtMs: startMs,
    updatedAtMs: startMs,
    progressDeadlineAtMs: startMs + policy.progressDeadlineMs,
    ...fields,
  };
}

/** A current task of group web, created at startMs, running with passing checks since startMs + 1 s. */
function task(id: string, fields: Partial<DeploymentTask> = {}): DeploymentTask {
  return {
    id,
    group: 'web',
    current: true,
    state: 'running',
    desired: 'run',
    hasChecks: true,
    health: { status: 'healthy', sinceMs: startMs + 1000, message: '' },
    runningSinceMs: startMs + 1000,
    createdAtMs: startMs,
    reason: null,
    ...fields,
  };
}

const old = (id: string, fields: Partial<DeploymentTask> = {}): DeploymentTask =>
  task(id, {
    current: false,
    createdAtMs: startMs - 3_600_000,
    runningSinceMs: startMs - 3_600_000,
    ...fields,
  });

const healthyIds = (progress: DeploymentProgress): string[] => progress.healthy.map((entry) => entry.taskId);
const empty: DeploymentProgress = { healthy: [], unhealthy: [], status: null, nextCheckAtMs: null };

describe('deploymentProgress: health', () => {
  it('judges a running task healthy after minHealthyTimeMs of passing checks, and says when to look', () => {
    const early = deploymentProgress(deployment(), [task('a')], startMs + 5000);
    expect(early.healthy).toEqual([]);
    expect(early.nextCheckAtMs).toBe(startMs + 11_000);
    expect(deploymentProgress(deployment(), [task('a')], startMs + 10_999).healthy).toEqual([]);
    expect(deploymentProgress(deployment(), [task('a')], startMs + 11_000).healthy).toEqual([
      { group: 'web', taskId: 'a' },
    ]);
  });

  it('counts the min healthy time from the later of running and passing checks', () => {
    const late = task('a', { health: { status: 'healthy', sinceMs: startMs + 20_000, message: '' } });
    expect(deploymentProgress(deployment(), [late], startMs + 25_000).healthy).toEqual([]);
    expect(healthyIds(deploymentProgress(deployment(), [late], startMs + 30_000))).toEqual(['a']);
    // Without checks, running is enough (an old verdict of checks it no longer has does not matter).
    const noChecks = task('b', { hasChecks: false, health: undefined });
    expect(healthyIds(deploymentProgress(deployment(), [noChecks], startMs + 11_000))).toEqual(['b']);
  });

  it('does not judge healthy a task without a verdict of its checks, not running, or not desired run', () => {
    const tasks = [
      task('a', { health: undefined }),
      task('b', { state: 'starting', runningSinceMs: undefined }),
      task('c', { desired: 'move' }),
      task('d', { runningSinceMs: undefined }),
    ];
    const progress = deploymentProgress(deployment(), tasks, startMs + 30_000);
    expect(progress.healthy).toEqual([]);
    expect(progress.unhealthy).toEqual([]);
    // The next look: their healthy deadline.
    expect(progress.nextCheckAtMs).toBe(startMs + 60_000);
  });

  it('judges unhealthy a task that failed, exited, fails its checks or misses its healthy deadline, not one lost with its node', () => {
    const tasks = [
      task('a', { state: 'failed', reason: 'exit code 1' }),
      task('b', { state: 'lost', reason: null }),
      task('c', { health: { status: 'unhealthy', sinceMs: startMs + 2000, message: 'GET / returned 503' } }),
      task('d', { state: 'pending', runningSinceMs: undefined, health: undefined }),
      task('e', { state: 'finished', reason: 'exit code 0' }),
    ];
    const progress = deploymentProgress(deployment(), tasks, startMs + 60_000);
    expect(progress.unhealthy).toEqual([
      { group: 'web', taskId: 'a', reason: 'task a failed: exit code 1' },
      { group: 'web', taskId: 'c', reason: 'task c unhealthy: GET / returned 503' },
      { group: 'web', taskId: 'd', reason: 'task d not healthy within 60 s' },
      { group: 'web', taskId: 'e', reason: 'task e exited: exit code 0' },
    ]);
    expect(progress.status).toEqual({ status: 'failed', reason: 'task a failed: exit code 1' });
  });

  it('gives no verdict on tasks the cluster stopped, old tasks, tasks judged before, or other groups', () => {
    const tasks = [
      task('k', { state: 'killed' }),
      task('s', { desired: 'kill', state: 'failed' }),
      task('t', { desired: 'kill', health: { status: 'unhealthy', sinceMs: startMs, message: 'x' } }),
      old('o', { state: 'failed' }),
      task('h'),
      task('x', { group: 'db', state: 'failed' }),
    ];
    const record = deployment({}, { healthyTaskIds: ['h'] });
    const progress = deploymentProgress(record, tasks, startMs + 90_000);
    expect(progress.healthy).toEqual([]);
    expect(progress.unhealthy).toEqual([]);
  });
});

describe('deploymentProgress: status', () => {
  it('does nothing for a deployment that ended', () => {
    for (const status of ['successful', 'failed', 'cancelled'] as const)
      expect(
        deploymentProgress(
          deployment({ status }),
          [task('a'), task('b', { state: 'failed' })],
          startMs + 11_000,
        ),
      ).toEqual(empty);
  });

  it('fails on an unhealthy task recorded earlier (while paused), with its reason', () => {
    const record = deployment({}, { unhealthy: [{ taskId: 'a', reason: 'task a failed: exit code 2' }] });
    expect(deploymentProgress(record, [task('b')], startMs + 11_000).status).toEqual({
      status: 'failed',
      reason: 'task a failed: exit code 2',
    });
  });

  it('succeeds once desiredTotal current tasks are healthy and no old one runs', () => {
    const record = deployment({}, { healthyTaskIds: ['a'] });
    const both = [task('a'), task('b')];
    expect(deploymentProgress(record, both, startMs + 5000).status).toBeNull();
    expect(deploymentProgress(record, both, startMs + 11_000)).toEqual({
      healthy: [{ group: 'web', taskId: 'b' }],
      unhealthy: [],
      status: { status: 'successful', reason: 'every instance runs the new version, healthy' },
      nextCheckAtMs: null,
    });
    // An old instance still wanted holds it back; one being stopped or ended does not.
    expect(deploymentProgress(record, [...both, old('o')], startMs + 11_000).status).toBeNull();
    const gone = [old('o', { desired: 'kill' }), old('p', { state: 'killed' })];
    expect(deploymentProgress(record, [...both, ...gone], startMs + 11_000).status?.status).toBe(
      'successful',
    );
    // Healthy tasks being stopped do not count towards desiredTotal.
    const stopping = deploymentProgress(
      deployment({}, { healthyTaskIds: ['a', 'b'] }),
      [task('a'), task('b', { desired: 'kill' })],
      startMs,
    );
    expect(stopping.status).toBeNull();
  });

  it('does not succeed before its canaries are promoted', () => {
    const web = { desiredCanaries: 1, promoted: false, healthyTaskIds: ['a', 'b'], canaryTaskIds: ['a'] };
    expect(deploymentProgress(deployment({}, web), [task('a'), task('b')], startMs).status).toBeNull();
    const promoted = deploymentProgress(
      deployment({}, { ...web, promoted: true }),
      [task('a'), task('b')],
      startMs,
    );
    expect(promoted.status?.status).toBe('successful');
  });

  it('fails when no instance turned healthy by the progress deadline', () => {
    const record = deployment({ progressDeadlineAtMs: startMs + 50_000 });
    const waiting = [task('a', { state: 'starting', runningSinceMs: undefined, health: undefined })];
    const before = deploymentProgress(record, waiting, startMs + 40_000);
    expect(before.status).toBeNull();
    expect(before.nextCheckAtMs).toBe(startMs + 50_000);
    expect(deploymentProgress(record, waiting, startMs + 50_000).status).toEqual({
      status: 'failed',
      reason: 'no instance became healthy within 120 s',
    });
    // A task turning healthy right then is progress: the deadline moves on.
    const progress = deploymentProgress(record, [task('a')], startMs + 50_000);
    expect(progress.status).toBeNull();
    expect(healthyIds(progress)).toEqual(['a']);
    // No deadline: never.
    expect(
      deploymentProgress(deployment({ progressDeadlineAtMs: null }), waiting, startMs + 50_000).status,
    ).toBeNull();
  });

  it('does not run the progress deadline while healthy canaries wait for promotion', () => {
    const web = { desiredCanaries: 1, promoted: false, healthyTaskIds: ['c'], canaryTaskIds: ['c'] };
    const tasks = [task('c'), old('o')];
    const record = deployment({ progressDeadlineAtMs: startMs + 50_000 }, web);
    expect(deploymentProgress(record, tasks, startMs + 500_000)).toEqual(empty);
    // Canaries not yet healthy: it runs.
    const unready = deployment({ progressDeadlineAtMs: startMs + 50_000 }, { ...web, healthyTaskIds: [] });
    const starting = [
      task('c', { state: 'starting', runningSinceMs: undefined, health: undefined }),
      old('o'),
    ];
    expect(deploymentProgress(unready, starting, startMs + 50_000).status?.status).toBe('failed');
  });

  it('while paused, records health only: no status, no progress deadline', () => {
    const record = deployment({ status: 'paused', progressDeadlineAtMs: null });
    const tasks = [
      task('a'),
      task('b', { state: 'failed', reason: 'exit code 1' }),
      task('c', { runningSinceMs: startMs + 9000 }),
    ];
    expect(deploymentProgress(record, tasks, startMs + 11_000)).toEqual({
      healthy: [{ group: 'web', taskId: 'a' }],
      unhealthy: [{ group: 'web', taskId: 'b', reason: 'task b failed: exit code 1' }],
      status: null,
      nextCheckAtMs: startMs + 19_000,
    });
  });

  it('looks again at the earliest of a min healthy time, a healthy deadline and the progress deadline', () => {
    const record = deployment({ progressDeadlineAtMs: startMs + 30_000 });
    const pending = task('p', { state: 'pending', runningSinceMs: undefined, health: undefined });
    expect(deploymentProgress(record, [pending], startMs).nextCheckAtMs).toBe(startMs + 30_000);
    expect(deploymentProgress(record, [pending], startMs + 30_000).status?.status).toBe('failed');
    const later = deployment({ progressDeadlineAtMs: startMs + 100_000 });
    expect(deploymentProgress(later, [pending], startMs).nextCheckAtMs).toBe(startMs + 60_000);
    expect(deploymentProgress(later, [pending, task('r')], startMs).nextCheckAtMs).toBe(startMs + 11_000);
    // A task turning healthy now: the deadline it pushes back is the next look.
    expect(deploymentProgress(later, [task('r'), old('o')], startMs + 11_000).nextCheckAtMs).toBe(
      startMs + 131_000,
    );
    expect(
      deploymentProgress(deployment({ progressDeadlineAtMs: null }), [old('o')], startMs).nextCheckAtMs,
    ).toBeNull();
  });
});

describe('applyDeploymentProgress', () => {
  it('records verdicts once, sets the status, and pushes the progress deadline back on progress', () => {
    const record = deployment();
    const progress: DeploymentProgress = {
      healthy: [{ group: 'web', taskId: 'a' }],
      unhealthy: [{ group: 'web', taskId: 'b', reason: 'task b failed: exit code 1' }],
      status: null,
      nextCheckAtMs: null,
    };
    applyDeploymentProgress(record, progress, startMs + 20_000);
    applyDeploymentProgress(record, progress, startMs + 21_000);
    expect(record.groups['web']).toMatchObject({
      healthyTaskIds: ['a'],
      unhealthy: [{ taskId: 'b', reason: 'task b failed: exit code 1' }],
    });
    // The second application found nothing new: the deadline stays where the first put it.
    expect(record.progressDeadlineAtMs).toBe(startMs + 20_000 + policy.progressDeadlineMs);
    expect(record.updatedAtMs).toBe(startMs + 21_000);
    applyDeploymentProgress(
      record,
      { ...empty, status: { status: 'failed', reason: 'task b failed: exit code 1' } },
      startMs + 22_000,
    );
    expect(record).toMatchObject({
      status: 'failed',
      statusReason: 'task b failed: exit code 1',
      progressDeadlineAtMs: null,
    });
  });

  it('does not change the status of a deployment paused or ended since, nor the deadline of a paused one', () => {
    const paused = deployment({ status: 'paused', progressDeadlineAtMs: null });
    applyDeploymentProgress(
      paused,
      { ...empty, healthy: [{ group: 'web', taskId: 'a' }], status: { status: 'successful', reason: 'x' } },
      startMs,
    );
    expect(paused).toMatchObject({ status: 'paused', progressDeadlineAtMs: null });
    expect(paused.groups['web']?.healthyTaskIds).toEqual(['a']);
    const cancelled = deployment({ status: 'cancelled' });
    applyDeploymentProgress(
      cancelled,
      { ...empty, healthy: [{ group: 'web', taskId: 'a' }], status: { status: 'failed', reason: 'x' } },
      startMs + 1,
    );
    expect(cancelled).toMatchObject({ status: 'cancelled', updatedAtMs: startMs });
    expect(cancelled.groups['web']?.healthyTaskIds).toEqual([]);
  });

  it('keeps the deadline off when the policy has none, and ignores unknown groups', () => {
    const record = deployment({ policy: { ...policy, progressDeadlineMs: 0 }, progressDeadlineAtMs: null });
    applyDeploymentProgress(
      record,
      {
        ...empty,
        healthy: [
          { group: 'web', taskId: 'a' },
          { group: 'db', taskId: 'z' },
        ],
      },
      startMs,
    );
    expect(record.progressDeadlineAtMs).toBeNull();
    expect(Object.keys(record.groups)).toEqual(['web']);
  });

  it('gives the same record whatever the order of identical applications (replicated determinism)', () => {
    const progress = deploymentProgress(
      deployment(),
      [task('b'), task('a'), task('c', { state: 'failed' })],
      startMs + 11_000,
    );
    const one = deployment();
    const two = deployment();
    applyDeploymentProgress(one, progress, startMs + 12_000);
    applyDeploymentProgress(two, progress, startMs + 12_000);
    applyDeploymentProgress(two, progress, startMs + 12_000);
    expect(two).toEqual(one);
  });
});

describe('groupRollout', () => {
  it('is active while running, inactive when paused or failed, and absent otherwise', () => {
    const web = { desiredCanaries: 1, promoted: false, healthyTaskIds: ['a'], canaryTaskIds: ['a'] };
    expect(groupRollout(deployment({}, web), 'web')).toEqual({
      maxParallel: 2,
      order: 'stop-first',
      canary: 1,
      promoted: false,
      active: true,
      healthyTaskIds: new Set(['a']),
      canaryTaskIds: new Set(['a']),
      startedAtMs: deployment({}, web).createdAtMs,
    });
    expect(groupRollout(deployment({ status: 'paused' }), 'web')?.active).toBe(false);
    expect(groupRollout(deployment({ status: 'failed' }), 'web')?.active).toBe(false);
    expect(groupRollout(deployment({ status: 'successful' }), 'web')).toBeUndefined();
    expect(groupRollout(deployment({ status: 'cancelled' }), 'web')).toBeUndefined();
    expect(groupRollout(deployment(), 'db')).toBeUndefined();
    expect(groupRollout(undefined, 'web')).toBeUndefined();
  });
});

describe('promotion', () => {
  const canaries = { desiredCanaries: 2, promoted: false, canaryTaskIds: ['a', 'b'] };

  it('is needed while a running or paused deployment has canaries not promoted', () => {
    expect(needsPromotion(deployment({}, canaries))).toBe(true);
    expect(needsPromotion(deployment({ status: 'paused' }, canaries))).toBe(true);
    expect(needsPromotion(deployment({ status: 'failed' }, canaries))).toBe(false);
    expect(needsPromotion(deployment())).toBe(false);
  });

  it('promotes every group once every canary is healthy, and restarts the progress deadline', () => {
    const record = deployment({ groups: { web: groupRecord(canaries), db: groupRecord() } });
    expect(promoteDeployment(record, startMs + 5000)).toBe(
      'group web: 0 of 2 canaries healthy; promote once all are',
    );
    expect(record.groups['web']?.promoted).toBe(false);
    record.groups['web']?.healthyTaskIds.push('a', 'b');
    expect(promoteDeployment(record, startMs + 5000)).toBeNull();
    expect(record).toMatchObject({
      statusReason: 'canaries promoted',
      updatedAtMs: startMs + 5000,
      progressDeadlineAtMs: startMs + 5000 + policy.progressDeadlineMs,
    });
    expect(Object.values(record.groups).every((group) => group.promoted)).toBe(true);
    expect(promoteDeployment(record, startMs + 6000)).toBe('deployment d7 has no canaries to promote');
  });

  it('is refused for a deployment that is not running or paused', () => {
    const record = deployment({ status: 'failed' }, { ...canaries, healthyTaskIds: ['a', 'b'] });
    expect(promoteDeployment(record, startMs)).toBe('deployment d7 is failed: nothing to promote');
    expect(record.groups['web']?.promoted).toBe(false);
    const paused = deployment(
      { status: 'paused', progressDeadlineAtMs: null },
      { ...canaries, healthyTaskIds: ['a', 'b'] },
    );
    expect(promoteDeployment(paused, startMs)).toBeNull();
    expect(paused.progressDeadlineAtMs).toBeNull();
  });
});
