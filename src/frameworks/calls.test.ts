import { describe, expect, it } from 'vitest';
import { decideCall, type CallParts } from './calls.ts';
import { resolveFrameworkInfo } from './commands.ts';
import { OfferBook } from './offers.ts';
import { FrameworkRegistry } from './registry.ts';

const GiB = 1024 ** 3;

function parts(): CallParts {
  const registry = new FrameworkRegistry();
  const info = resolveFrameworkInfo({ name: 'f', user: 'u' });
  registry.apply({
    type: 'subscribeFramework',
    frameworkId: 'f',
    resubscribe: false,
    streamId: 's',
    info,
    atMs: 0,
  });
  registry.addTasks('f', [{ taskId: 'old', clusterTaskId: 'c-old', nodeId: 'x' }], 0);
  const book = new OfferBook({ epoch: 'e' });
  book.subscribe({ id: 'f', info });
  return { book, registry };
}

describe('scheduler calls', () => {
  it('ACCEPT becomes a launch to propose; a refused one reports its tasks dropped or in error', () => {
    const { book, registry } = parts();
    decideCall({ book, registry }, { type: 'REVIVE', frameworkId: 'f' }, 0);
    const view = {
      nodes: [
        {
          id: 'x',
          capacity: { cpuMillis: 1000, memoryBytes: GiB },
          free: { cpuMillis: 1000, memoryBytes: GiB },
          up: true,
          schedulable: true,
        },
      ],
    };
    const [event] = book.offerRound(view, 0);
    const offerId = event?.type === 'OFFERS' ? (event.offers[0]?.id ?? '') : '';
    const task = { taskId: 'old', nodeId: 'x', resources: { cpuMillis: 100, memoryBytes: 100 }, spec: {} };
    const refused = decideCall(
      { book, registry },
      { type: 'ACCEPT', frameworkId: 'f', offerIds: [offerId], tasks: [task] },
      1,
    );
    expect(refused.refusal?.frameworkCode).toBe('TASK_DUPLICATE');
    expect(refused.events.map((e) => e.type === 'UPDATE' && [e.taskId, e.status.state])).toEqual([
      ['old', 'TASK_ERROR'],
    ]);
    const [again] = book.offerRound(view, 2);
    const secondId = again?.type === 'OFFERS' ? (again.offers[0]?.id ?? '') : '';
    const accepted = decideCall(
      { book, registry },
      { type: 'ACCEPT', frameworkId: 'f', offerIds: [secondId], tasks: [{ ...task, taskId: 'new' }] },
      3,
    );
    expect(accepted.launch?.launches.map((launch) => launch.taskId)).toEqual(['new']);
  });

  it('KILL names the cluster task; an unknown one is reported lost at once', () => {
    const p = parts();
    expect(decideCall(p, { type: 'KILL', frameworkId: 'f', taskId: 'old' }, 5).killClusterTaskId).toBe(
      'c-old',
    );
    const unknown = decideCall(p, { type: 'KILL', frameworkId: 'f', taskId: 'ghost' }, 5);
    expect(unknown.killClusterTaskId).toBeNull();
    expect(unknown.events[0]?.type === 'UPDATE' && unknown.events[0].status.state).toBe('TASK_LOST');
  });

  it('ACKNOWLEDGE and TEARDOWN become durable commands; calls without a subscription are refused', () => {
    const p = parts();
    expect(
      decideCall(p, { type: 'ACKNOWLEDGE', frameworkId: 'f', taskId: 'old', uuid: 'u0' }, 7).command,
    ).toEqual({
      type: 'acknowledgeFrameworkUpdate',
      frameworkId: 'f',
      taskId: 'old',
      uuid: 'u0',
      atMs: 7,
    });
    expect(decideCall(p, { type: 'TEARDOWN', frameworkId: 'f' }, 8).command?.type).toBe('teardownFramework');
    expect(p.book.isSubscribed('f')).toBe(false);
    expect(() => decideCall(p, { type: 'SUPPRESS', frameworkId: 'f' }, 9)).toThrow(/no subscription/);
  });
});
