import { describe, expect, it } from 'vitest';
import { allocate } from './allocate.ts';
import { placementOrder, type QueuedTask } from './queue-order.ts';
import type { AllocatorTask } from './types.ts';

const MiB = 1024 * 1024;
const task = (
  id: string,
  priority: number,
  submitIndex: number,
  namespace: string,
  cpuMillis = 1000,
): QueuedTask => ({
  id,
  priority,
  submitIndex,
  namespace,
  request: { cpuMillis, memoryBytes: 100 * MiB },
});
const capacity = { cpuMillis: 10_000, memoryBytes: 10_000 * MiB };

describe('the queue in placement order', () => {
  it('takes strict priority first, then namespaces in turn by weighted dominant share, then FIFO', () => {
    const pending = [
      task('a1', 50, 1, 'a'),
      task('a2', 50, 2, 'a'),
      task('a3', 50, 3, 'a'),
      task('b1', 50, 4, 'b'),
      task('b2', 50, 5, 'b'),
      task('urgent', 90, 9, 'b'),
    ];
    // b already holds 2 CPUs; a holds none: a goes first until its share passes b's.
    const namespaces = new Map([
      ['a', { weight: 1, usage: { cpuMillis: 0, memoryBytes: 0 } }],
      ['b', { weight: 1, usage: { cpuMillis: 2000, memoryBytes: 0 } }],
    ]);
    expect(placementOrder(pending, namespaces, capacity)).toEqual(['urgent', 'a1', 'a2', 'a3', 'b1', 'b2']);
  });

  it('gives a namespace with twice the weight twice the turns', () => {
    const pending = ['1', '2', '3', '4', '5', '6'].flatMap((n, i) => [
      task(`heavy${n}`, 50, i * 2, 'heavy'),
      task(`light${n}`, 50, i * 2 + 1, 'light'),
    ]);
    const namespaces = new Map([['heavy', { weight: 2, usage: { cpuMillis: 0, memoryBytes: 0 } }]]);
    const order = placementOrder(pending, namespaces, capacity).slice(0, 6);
    expect(order.filter((id) => id.startsWith('heavy'))).toHaveLength(4);
  });

  it('agrees with the allocator on a cluster with room for everything', () => {
    const pending = [
      task('a1', 50, 1, 'a'),
      task('b1', 50, 2, 'b', 3000),
      task('a2', 50, 3, 'a'),
      task('b2', 50, 4, 'b'),
      task('c1', 70, 5, 'c'),
    ];
    const plan = allocate({
      nodes: [
        {
          id: 'n1',
          capacity,
          free: capacity,
          labels: {},
          drivers: ['exec'],
        },
      ],
      pending: pending.map((p): AllocatorTask => ({
        id: p.id,
        priority: p.priority,
        submitIndex: p.submitIndex,
        namespace: p.namespace,
        driver: 'exec',
        request: p.request,
        constraints: {},
      })),
      placementsMax: 100,
    });
    expect(placementOrder(pending, new Map(), capacity)).toEqual(plan.placements.map((p) => p.taskId));
  });
});
