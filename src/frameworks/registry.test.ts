import { describe, expect, it } from 'vitest';
import { seededRandom } from '../shared/random.ts';
import {
  newFrameworkId,
  resolveFrameworkInfo,
  validateFrameworkCommand,
  type FrameworkCommand,
} from './commands.ts';
import { isFrameworkError } from './errors.ts';
import { failoverTimeoutMsDefault, pendingUpdatesMax } from './limits.ts';
import { FrameworkRegistry, type FrameworkApplyResult } from './registry.ts';

const info = resolveFrameworkInfo({ name: 'spark', user: 'alice', role: 'analytics' });
const subscribe = (
  streamId: string,
  atMs: number,
  resubscribe = false,
  frameworkId = 'fw-1',
): FrameworkCommand => ({
  type: 'subscribeFramework',
  frameworkId,
  resubscribe,
  streamId,
  info,
  atMs,
});

function applied(registry: FrameworkRegistry, command: FrameworkCommand): FrameworkApplyResult {
  // Every command goes through the codec first, as a log entry would.
  return registry.apply(validateFrameworkCommand(JSON.parse(JSON.stringify(command))));
}

function withTasks(): FrameworkRegistry {
  const registry = new FrameworkRegistry();
  expect(applied(registry, subscribe('s1', 1000)).ok).toBe(true);
  expect(
    registry.addTasks(
      'fw-1',
      [
        { taskId: 'a', clusterTaskId: 'c-a', nodeId: 'n1' },
        { taskId: 'b', clusterTaskId: 'c-b', nodeId: 'n2' },
      ],
      1000,
    ),
  ).toBeNull();
  return registry;
}

describe('framework info', () => {
  it('fills Mesos-like defaults and refuses what breaks a rule, naming the field', () => {
    expect(info).toEqual({
      name: 'spark',
      user: 'alice',
      role: 'analytics',
      priority: 50,
      failoverTimeoutMs: failoverTimeoutMsDefault,
      partitionAware: false,
    });
    expect(resolveFrameworkInfo({ name: 'x', user: 'u' }).role).toBe('default');
    expect(() => resolveFrameworkInfo({ name: 'x', user: 'u', priority: 101 })).toThrow(/priority/);
    try {
      resolveFrameworkInfo({ name: '', user: 'u' });
      expect.unreachable();
    } catch (error) {
      expect(isFrameworkError(error, 'FRAMEWORK_INVALID')).toBe(true);
      expect((error as Error).message).toMatch(/^framework info: name/);
    }
  });

  it('new ids come from the injected source', () => {
    expect(newFrameworkId(seededRandom(1))).toBe(newFrameworkId(seededRandom(1)));
    expect(newFrameworkId(seededRandom(1))).toMatch(/^fw-[0-9a-f]{16}$/);
  });

  it('the codec refuses unknown fields and types', () => {
    expect(() => validateFrameworkCommand({ ...subscribe('s', 1), extra: 1 })).toThrow(
      /not a framework command/,
    );
    expect(() => validateFrameworkCommand({ type: 'expireFramework', frameworkId: 'f', atMs: -1 })).toThrow();
  });
});

describe('the registry', () => {
  it('registers; a duplicate commit is harmless; another new framework with the id is refused', () => {
    const registry = new FrameworkRegistry();
    expect(applied(registry, subscribe('s1', 1000)).ok).toBe(true);
    expect(applied(registry, subscribe('s1', 1000)).ok).toBe(true);
    const taken = applied(registry, subscribe('s2', 1001));
    expect(!taken.ok && taken.error.frameworkCode).toBe('FRAMEWORK_EXISTS');
    expect(registry.list().map((framework) => framework.id)).toEqual(['fw-1']);
  });

  it('re-subscribing with the same id replaces the older stream, which is told ERROR and closed', () => {
    const registry = withTasks();
    const result = applied(registry, subscribe('s2', 2000, true));
    expect(result).toEqual({
      ok: true,
      effects: {
        killTasks: [],
        events: [
          {
            type: 'ERROR',
            frameworkId: 'fw-1',
            streamId: 's1',
            message: 'framework failed over: a newer subscription replaced this stream',
          },
        ],
        closeStreamId: 's1',
      },
    });
    expect(registry.get('fw-1')?.streamId).toBe('s2');
    expect(registry.get('fw-1')?.taskCount).toBe(2);
  });

  it('a re-subscription may not change the role, and an unknown id must subscribe anew', () => {
    const registry = withTasks();
    const moved = registry.apply({
      ...subscribe('s2', 2000, true),
      info: { ...info, role: 'other' },
    } as FrameworkCommand);
    expect(!moved.ok && moved.error.frameworkCode).toBe('FRAMEWORK_MISMATCH');
    const unknown = applied(registry, subscribe('s9', 2000, true, 'fw-9'));
    expect(!unknown.ok && unknown.error.message).toMatch(/subscribe without an id/);
  });

  it('disconnect starts the failover clock; a stale close is ignored; reconnecting in time keeps tasks', () => {
    const registry = withTasks();
    applied(registry, subscribe('s2', 1500, true));
    applied(registry, { type: 'disconnectFramework', frameworkId: 'fw-1', streamId: 's1', atMs: 1600 });
    expect(registry.get('fw-1')?.streamId).toBe('s2');
    applied(registry, { type: 'disconnectFramework', frameworkId: 'fw-1', streamId: 's2', atMs: 2000 });
    expect(registry.get('fw-1')?.expiresAtMs).toBe(2000 + failoverTimeoutMsDefault);
    expect(registry.dueForExpiry(2000 + failoverTimeoutMsDefault - 1)).toEqual([]);
    expect(registry.nextExpiryAtMs()).toBe(2000 + failoverTimeoutMsDefault);
    applied(registry, subscribe('s3', 3000, true));
    expect(registry.get('fw-1')?.expiresAtMs).toBeNull();
    expect(registry.liveClusterTaskIds('fw-1')).toEqual(['c-a', 'c-b']);
  });

  it('expires after the failover timeout (re-checked at apply), listing its live tasks to kill', () => {
    const registry = withTasks();
    registry.recordStatus('c-b', { state: 'TASK_FINISHED', message: 'exit 0', nodeId: 'n2' }, 1100);
    applied(registry, { type: 'disconnectFramework', frameworkId: 'fw-1', streamId: 's1', atMs: 2000 });
    const early = applied(registry, { type: 'expireFramework', frameworkId: 'fw-1', atMs: 2001 });
    expect(!early.ok && early.error.frameworkCode).toBe('FRAMEWORK_NOT_EXPIRED');
    const dueAtMs = 2000 + failoverTimeoutMsDefault;
    expect(registry.dueForExpiry(dueAtMs)).toEqual(['fw-1']);
    const expired = applied(registry, { type: 'expireFramework', frameworkId: 'fw-1', atMs: dueAtMs });
    expect(expired).toEqual({ ok: true, effects: { killTasks: ['c-a'], events: [], closeStreamId: null } });
    expect(registry.has('fw-1')).toBe(false);
    expect(registry.ownerOf('c-a')).toBeNull();
    // The kill's report finds no framework any more.
    expect(
      registry.recordStatus('c-a', { state: 'TASK_KILLED', message: '', nodeId: 'n1' }, dueAtMs),
    ).toBeNull();
  });

  it('teardown kills its tasks and closes its stream', () => {
    const registry = withTasks();
    expect(applied(registry, { type: 'teardownFramework', frameworkId: 'fw-1', atMs: 5000 })).toEqual({
      ok: true,
      effects: { killTasks: ['c-a', 'c-b'], events: [], closeStreamId: 's1' },
    });
  });

  it('status updates wait for their acknowledgement; an ended task leaves once acknowledged', () => {
    const registry = withTasks();
    const running = registry.recordStatus('c-a', { state: 'TASK_RUNNING', message: '', nodeId: 'n1' }, 1100);
    expect(running?.uuid).toBe('u0');
    // The same state again is no update.
    expect(
      registry.recordStatus('c-a', { state: 'TASK_RUNNING', message: '', nodeId: 'n1' }, 1150),
    ).toBeNull();
    const done = registry.recordStatus(
      'c-a',
      { state: 'TASK_FINISHED', message: 'exit 0', nodeId: 'n1' },
      1200,
    );
    expect(registry.pendingUpdates('fw-1').map((update) => update.uuid)).toEqual(['u0', 'u1']);
    // Nothing follows an end.
    expect(
      registry.recordStatus('c-a', { state: 'TASK_RUNNING', message: '', nodeId: 'n1' }, 1300),
    ).toBeNull();
    const ack = (uuid: string): void => {
      expect(
        applied(registry, {
          type: 'acknowledgeFrameworkUpdate',
          frameworkId: 'fw-1',
          taskId: 'a',
          uuid,
          atMs: 1400,
        }).ok,
      ).toBe(true);
    };
    ack('u1');
    expect(registry.hasTask('fw-1', 'a')).toBe(true);
    ack('u0');
    ack('u0');
    expect(done?.status.state).toBe('TASK_FINISHED');
    expect(registry.hasTask('fw-1', 'a')).toBe(false);
    expect(registry.ownerOf('c-a')).toBeNull();
  });

  it('keeps at most pendingUpdatesMax updates, dropping superseded ones first', () => {
    const registry = withTasks();
    registry.recordStatus('c-b', { state: 'TASK_FAILED', message: 'exit 1', nodeId: 'n2' }, 1001);
    for (let i = 0; i < pendingUpdatesMax + 5; i++)
      registry.recordStatus(
        'c-a',
        { state: i % 2 === 0 ? 'TASK_RUNNING' : 'TASK_STARTING', message: `${i}`, nodeId: 'n1' },
        1002 + i,
      );
    const pending = registry.pendingUpdates('fw-1');
    expect(pending).toHaveLength(pendingUpdatesMax);
    // b's only (terminal) update survives; a's oldest went.
    expect(pending[0]?.taskId).toBe('b');
    expect(pending.at(-1)?.status.message).toBe(`${pendingUpdatesMax + 4}`);
    expect(registry.get('fw-1')?.updatesDropped).toBe(6);
  });

  it('reconciles explicitly (unknown tasks reported lost) and implicitly (all its tasks)', () => {
    const registry = withTasks();
    registry.recordStatus('c-a', { state: 'TASK_RUNNING', message: '', nodeId: 'n1' }, 1100);
    const explicit = registry.reconcile('fw-1', ['a', 'ghost'], 5000);
    expect(
      explicit.map((event) => event.type === 'UPDATE' && [event.taskId, event.status.state, event.uuid]),
    ).toEqual([
      ['a', 'TASK_RUNNING', null],
      ['ghost', 'TASK_LOST', null],
    ]);
    const implicit = registry.reconcile('fw-1', [], 5000);
    expect(implicit.map((event) => event.type === 'UPDATE' && event.taskId)).toEqual(['a', 'b']);
    const aware = new FrameworkRegistry();
    aware.apply({ ...subscribe('s', 1), info: { ...info, partitionAware: true } } as FrameworkCommand);
    const [answer] = aware.reconcile('fw-1', ['ghost'], 5000);
    expect(answer?.type === 'UPDATE' && answer.status.state).toBe('TASK_UNKNOWN');
  });

  it('refuses tasks that are already someone’s, all or nothing', () => {
    const registry = withTasks();
    const error = registry.addTasks(
      'fw-1',
      [
        { taskId: 'c', clusterTaskId: 'c-c', nodeId: 'n1' },
        { taskId: 'a', clusterTaskId: 'c-x', nodeId: 'n1' },
      ],
      2000,
    );
    expect(error?.frameworkCode).toBe('TASK_DUPLICATE');
    expect(registry.hasTask('fw-1', 'c')).toBe(false);
    expect(registry.addTasks('nope', [], 1)?.frameworkCode).toBe('FRAMEWORK_UNKNOWN');
  });

  it('after a leader change, every connected framework is an orphan to disconnect', () => {
    const registry = withTasks();
    expect(registry.orphans(new Set())).toEqual([{ frameworkId: 'fw-1', streamId: 's1' }]);
    expect(registry.orphans(new Set(['s1']))).toEqual([]);
  });

  it('round-trips through a snapshot, and refuses a corrupt one without changing', () => {
    const registry = withTasks();
    registry.recordStatus('c-a', { state: 'TASK_RUNNING', message: 'up', nodeId: 'n1' }, 1100);
    const snapshot = JSON.parse(JSON.stringify(registry.toSnapshot())) as unknown;
    const copy = new FrameworkRegistry();
    copy.restore(snapshot);
    expect(copy.toSnapshot()).toEqual(registry.toSnapshot());
    expect(copy.ownerOf('c-b')).toEqual({ frameworkId: 'fw-1', taskId: 'b' });
    expect(() => copy.restore({ frameworks: [{ id: 'x' }] })).toThrow(/frameworks snapshot/);
    expect(copy.toSnapshot()).toEqual(registry.toSnapshot());
  });
});
