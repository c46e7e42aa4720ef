import { describe, expect, it } from 'vitest';
import { seededRandom } from '../shared/random.ts';
import { allocate, type AllocatorNode, type AllocatorTask } from './allocate.ts';

const MiB = 1024 * 1024;
const node = (
  id: string,
  cpuMillis: number,
  memoryMiB: number,
  labels: Record<string, string> = {},
): AllocatorNode => ({
  id,
  capacity: { cpuMillis, memoryBytes: memoryMiB * MiB },
  free: { cpuMillis, memoryBytes: memoryMiB * MiB },
  labels,
  drivers: ['exec', 'docker'],
});
const task = (
  id: string,
  cpuMillis: number,
  memoryMiB: number,
  priority = 50,
  submitIndex = 0,
  constraints: Record<string, string> = {},
): AllocatorTask => ({
  id,
  priority,
  submitIndex,
  driver: 'exec',
  request: { cpuMillis, memoryBytes: memoryMiB * MiB },
  constraints,
});

describe('allocate', () => {
  it('places highest priority first, then oldest, and leaves what fits nowhere pending with a reason', () => {
    const plan = allocate({
      nodes: [node('a', 1000, 1024)],
      pending: [task('low', 1000, 100, 10, 1), task('old', 1000, 100, 50, 2), task('new', 1000, 100, 50, 3)],
      placementsMax: 100,
    });
    expect(plan.placements).toEqual([{ taskId: 'old', nodeId: 'a' }]);
    expect(plan.waiting.map((w) => w.taskId)).toEqual(['new', 'low']);
    expect(plan.waiting[0]?.reason).toMatch(/no node has 1 CPU and 100 MiB free/);
  });

  it('bin-packs onto the fullest node that fits', () => {
    const nodes = [
      node('a', 4000, 4096),
      { ...node('b', 4000, 4096), free: { cpuMillis: 1000, memoryBytes: 1024 * MiB } },
    ];
    const plan = allocate({ nodes, pending: [task('t', 500, 256)], placementsMax: 100 });
    expect(plan.placements).toEqual([{ taskId: 't', nodeId: 'b' }]);
  });

  it('a blocked high-priority task reserves its node; lower ones backfill elsewhere only', () => {
    const nodes = [
      { ...node('a', 4000, 4096), free: { cpuMillis: 2000, memoryBytes: 4096 * MiB } },
      { ...node('b', 1000, 1024), free: { cpuMillis: 1000, memoryBytes: 1024 * MiB } },
    ];
    const plan = allocate({
      nodes,
      pending: [
        task('big', 3000, 100, 90, 1),
        task('small', 1000, 100, 10, 2),
        task('small2', 1000, 100, 10, 3),
      ],
      placementsMax: 100,
    });
    // 'big' waits for node a; 'small' may only use b.
    expect(plan.placements).toEqual([{ taskId: 'small', nodeId: 'b' }]);
    expect(plan.waiting.map((w) => w.taskId)).toEqual(['big', 'small2']);
  });

  it('explains constraint and size failures', () => {
    const plan = allocate({
      nodes: [node('a', 1000, 1024, { zone: 'us' })],
      pending: [task('c', 100, 10, 50, 1, { zone: 'eu' }), task('huge', 8000, 10, 50, 2)],
      placementsMax: 100,
    });
    expect(plan.waiting).toEqual([
      { taskId: 'c', reason: 'no node matches the constraints (1 nodes fail zone=eu)' },
      { taskId: 'huge', reason: 'no node has 8 CPU and 10 MiB in total (1 eligible)' },
    ]);
  });

  it('never overcommits a node and is deterministic (random clusters)', () => {
    const random = seededRandom(42);
    for (let round = 0; round < 200; round++) {
      const nodes = Array.from({ length: random.int(1, 8) }, (_, i) =>
        node(`n${i}`, random.int(1, 9) * 500, random.int(1, 9) * 256, {
          zone: random.next() < 0.5 ? 'a' : 'b',
        }),
      );
      const pending = Array.from({ length: random.int(0, 40) }, (_, i) =>
        task(
          `t${i}`,
          random.int(1, 6) * 250,
          random.int(1, 6) * 128,
          random.int(0, 101),
          i,
          random.next() < 0.2 ? { zone: 'a' } : {},
        ),
      );
      const plan = allocate({ nodes, pending, placementsMax: 1000 });
      expect(allocate({ nodes, pending: [...pending].reverse(), placementsMax: 1000 })).toEqual(plan);
      for (const n of nodes) {
        const placed = plan.placements
          .filter((p) => p.nodeId === n.id)
          .map((p) => pending.find((t) => t.id === p.taskId)!);
        expect(placed.reduce((sum, t) => sum + t.request.cpuMillis, 0)).toBeLessThanOrEqual(n.free.cpuMillis);
        expect(placed.reduce((sum, t) => sum + t.request.memoryBytes, 0)).toBeLessThanOrEqual(
          n.free.memoryBytes,
        );
        for (const t of placed)
          for (const [k, v] of Object.entries(t.constraints)) expect(n.labels[k]).toBe(v);
      }
      expect(plan.placements.length + plan.waiting.length).toBe(pending.length);
    }
  });
});
