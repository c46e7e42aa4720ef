import { describe, expect, it } from 'vitest';
import { seededRandom } from '../shared/random.ts';
import { allocate } from './allocate.ts';
import type { AllocatorNode, AllocatorTask, Plan, RunningTask } from './types.ts';
import { Allocator } from './allocator.ts';

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

  it('bin-packs: the first node in id order that fits, so later nodes stay empty', () => {
    const nodes = [
      node('c', 4000, 4096),
      { ...node('b', 4000, 4096), free: { cpuMillis: 1000, memoryBytes: 1024 * MiB } },
      { ...node('a', 4000, 4096), free: { cpuMillis: 400, memoryBytes: 1024 * MiB } },
    ];
    const plan = allocate({
      nodes,
      pending: [task('t', 500, 256), task('u', 2000, 256, 50, 1)],
      placementsMax: 100,
    });
    expect(plan.placements).toEqual([
      { taskId: 't', nodeId: 'b' },
      { taskId: 'u', nodeId: 'c' },
    ]);
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
      { taskId: 'c', reason: 'no node matches the constraints (1 node fails zone=eu)' },
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

const GiB = 1024 * MiB;
const labelled = (
  id: string,
  cpuMillis: number,
  memoryMiB: number,
  labels: Record<string, string>,
): AllocatorNode => node(id, cpuMillis, memoryMiB, labels);
const placedOn = (plan: Plan): Record<string, string> =>
  Object.fromEntries(plan.placements.map((p) => [p.taskId, p.nodeId]));

describe('allocate: fair sharing', () => {
  it("reproduces the DRF paper's example: 9 CPUs, 18 GB; A's tasks <1 CPU, 4 GB>, B's <3 CPU, 1 GB>", () => {
    const pending: AllocatorTask[] = [];
    for (let i = 0; i < 10; i++) {
      // B submits first: fairness, not FIFO, decides between namespaces of equal priority.
      pending.push({ ...task(`b${i}`, 3000, 1024, 50, i), namespace: 'B' });
      pending.push({ ...task(`a${i}`, 1000, 4096, 50, 100 + i), namespace: 'A' });
    }
    const plan = allocate({ nodes: [node('n', 9000, 18 * 1024)], pending, placementsMax: 100 });
    const ids = plan.placements.map((p) => p.taskId);
    expect(ids.filter((id) => id.startsWith('a'))).toHaveLength(3);
    expect(ids.filter((id) => id.startsWith('b'))).toHaveLength(2);
  });

  it('weights a namespace: weight 2 gets twice the dominant share', () => {
    const pending: AllocatorTask[] = [];
    for (let i = 0; i < 12; i++) {
      pending.push({ ...task(`a${i}`, 1000, 1024, 50, i), namespace: 'A' });
      pending.push({ ...task(`b${i}`, 1000, 1024, 50, i), namespace: 'B' });
    }
    const plan = allocate({
      nodes: [node('n', 12_000, 12 * 1024)],
      pending,
      namespaces: [{ name: 'B', weight: 2 }],
      placementsMax: 100,
    });
    const ids = plan.placements.map((p) => p.taskId);
    expect(ids.filter((id) => id.startsWith('a'))).toHaveLength(4);
    expect(ids.filter((id) => id.startsWith('b'))).toHaveLength(8);
  });

  it('counts what a namespace already runs, and stops at its quota', () => {
    const plan = allocate({
      nodes: [node('n', 8000, 8192)],
      running: [
        {
          id: 'r',
          nodeId: 'n',
          priority: 50,
          namespace: 'team',
          request: { cpuMillis: 1000, memoryBytes: MiB },
        },
      ],
      pending: [0, 1, 2].map((i) => ({ ...task(`t${i}`, 1000, 100, 50, i), namespace: 'team' })),
      namespaces: [{ name: 'team', quota: { cpuMillis: 3000 } }],
      placementsMax: 100,
    });
    expect(plan.placements.map((p) => p.taskId)).toEqual(['t0', 't1']);
    expect(plan.waiting).toEqual([
      {
        taskId: 't2',
        reason: 'namespace team is at its quota: 3 CPU of 3 CPU in use, the task needs 1 CPU more',
      },
    ]);
  });

  it('caps how many tasks of a job run at once', () => {
    const plan = allocate({
      nodes: [node('n', 8000, 8192)],
      running: [
        { id: 'r', nodeId: 'n', priority: 50, job: 'web', request: { cpuMillis: 1000, memoryBytes: MiB } },
      ],
      pending: [0, 1, 2].map((i) => ({ ...task(`t${i}`, 1000, 100, 50, i), job: 'web' })),
      jobs: [{ id: 'web', runningMax: 2 }],
      placementsMax: 100,
    });
    expect(plan.placements.map((p) => p.taskId)).toEqual(['t0']);
    expect(plan.waiting.map((w) => w.reason)).toEqual([
      'job web has 2 tasks running, its cap of 2',
      'job web has 2 tasks running, its cap of 2',
    ]);
  });
});

describe('allocate: placement rules', () => {
  it('honours =, !=, in, notIn and regex on labels', () => {
    const nodes = [
      labelled('a', 4000, 4096, { zone: 'eu-1', disk: 'ssd' }),
      labelled('b', 4000, 4096, { zone: 'eu-2' }),
      labelled('c', 4000, 4096, { zone: 'us-1', disk: 'ssd' }),
    ];
    const rule = (id: string, labelConstraints: AllocatorTask['labelConstraints']): AllocatorTask => ({
      ...task(id, 100, 10),
      ...(labelConstraints ? { labelConstraints } : {}),
    });
    const plan = allocate({
      nodes,
      pending: [
        rule('ne', [{ key: 'disk', operator: '!=', value: 'ssd' }]),
        rule('in', [{ key: 'zone', operator: 'in', values: ['us-1', 'ap-1'] }]),
        rule('notIn', [{ key: 'zone', operator: 'notIn', values: ['eu-1', 'us-1'] }]),
        rule('regex', [{ key: 'zone', operator: 'regex', pattern: '^us-' }]),
        rule('none', [{ key: 'zone', operator: 'regex', pattern: '^ap-' }]),
      ],
      placementsMax: 100,
    });
    expect(placedOn(plan)).toEqual({ ne: 'b', in: 'c', notIn: 'b', regex: 'c' });
    expect(plan.waiting).toEqual([
      { taskId: 'none', reason: 'no node matches the constraints (3 nodes fail zone=~^ap-)' },
    ]);
  });

  it('needs its ports free on the node', () => {
    const nodes = [
      { ...node('a', 4000, 4096), portsInUse: [8080] },
      node('b', 4000, 4096),
      node('c', 4000, 4096),
    ];
    const web = (id: string, i: number): AllocatorTask => ({
      ...task(id, 100, 10, 50, i),
      ports: { http: 8080 },
    });
    const plan = allocate({ nodes, pending: [web('w1', 1), web('w2', 2), web('w3', 3)], placementsMax: 100 });
    expect(placedOn(plan)).toEqual({ w1: 'b', w2: 'c' });
    expect(plan.waiting[0]?.reason).toBe(
      'no node has 0.1 CPU and 10 MiB free (3 large enough, all busy); needs port 8080',
    );
  });

  it('keeps tasks of a distinct job on different nodes', () => {
    const replica = (i: number): AllocatorTask => ({
      ...task(`r${i}`, 100, 10, 50, i),
      job: 'db',
      distinctNodes: true,
    });
    const plan = allocate({
      nodes: [node('a', 4000, 4096), node('b', 4000, 4096)],
      pending: [replica(0), replica(1), replica(2)],
      placementsMax: 100,
    });
    expect(placedOn(plan)).toEqual({ r0: 'a', r1: 'b' });
    expect(plan.waiting[0]?.reason).toMatch(/one task of job db per node$/);
  });

  it('spreads a job over a label, and prefers soft affinities', () => {
    const nodes = [
      labelled('a1', 8000, 8192, { zone: 'a' }),
      labelled('a2', 8000, 8192, { zone: 'a' }),
      labelled('b1', 8000, 8192, { zone: 'b', disk: 'ssd' }),
      labelled('b2', 8000, 8192, { zone: 'b' }),
    ];
    const spread = (i: number): AllocatorTask => ({
      ...task(`s${i}`, 100, 10, 50, i),
      job: 'web',
      spreadOver: 'zone',
    });
    const plan = allocate({
      nodes,
      pending: [
        spread(0),
        spread(1),
        spread(2),
        spread(3),
        {
          ...task('fast', 100, 10, 50, 9),
          affinities: [{ constraint: { key: 'disk', operator: '=', value: 'ssd' }, weight: 50 }],
        },
      ],
      placementsMax: 100,
    });
    // Alternating zones, packing within each; the affinity wins over node order.
    expect(placedOn(plan)).toEqual({ s0: 'a1', s1: 'b1', s2: 'a1', s3: 'b1', fast: 'b1' });
  });

  it('packs by spreading when asked: the node with the most free CPU', () => {
    const nodes = [
      { ...node('a', 8000, 8192), free: { cpuMillis: 2000, memoryBytes: 8192 * MiB } },
      { ...node('b', 8000, 8192), free: { cpuMillis: 6000, memoryBytes: 8192 * MiB } },
      { ...node('c', 8000, 8192), free: { cpuMillis: 4000, memoryBytes: 8192 * MiB } },
    ];
    const plan = allocate({
      nodes,
      pending: [{ ...task('t', 100, 10), packing: 'spread' }],
      placementsMax: 100,
    });
    expect(placedOn(plan)).toEqual({ t: 'b' });
  });

  it('counts disk and devices, and skips draining nodes', () => {
    const gpuNode: AllocatorNode = {
      ...node('g', 8000, 8192),
      capacity: { cpuMillis: 8000, memoryBytes: 8 * GiB, diskBytes: 100 * GiB, devices: { gpu: 2 } },
      free: { cpuMillis: 8000, memoryBytes: 8 * GiB, diskBytes: 100 * GiB, devices: { gpu: 2 } },
    };
    const plan = allocate({
      nodes: [{ ...node('d', 8000, 8192), schedulable: false }, node('a', 8000, 8192), gpuNode],
      pending: [
        {
          ...task('train', 1000, 1024, 50, 1),
          request: { cpuMillis: 1000, memoryBytes: GiB, devices: { gpu: 2 } },
        },
        {
          ...task('more', 1000, 1024, 50, 2),
          request: { cpuMillis: 1000, memoryBytes: GiB, devices: { gpu: 1 } },
        },
        {
          ...task('big', 1000, 1024, 50, 3),
          request: { cpuMillis: 1000, memoryBytes: GiB, diskBytes: 200 * GiB },
        },
      ],
      placementsMax: 100,
    });
    expect(placedOn(plan)).toEqual({ train: 'g' });
    expect(plan.waiting).toEqual([
      { taskId: 'more', reason: 'no node has 1 CPU and 1 GiB, 1 gpu free (1 large enough, all busy)' },
      { taskId: 'big', reason: 'no node has 1 CPU and 1 GiB, 200 GiB disk in total (2 eligible)' },
    ]);
  });

  it('starts a group all together or not at all', () => {
    const member = (group: string, i: number): AllocatorTask => ({
      ...task(`${group}${i}`, 2000, 10, 50, i),
      group,
    });
    const plan = allocate({
      nodes: [node('a', 2000, 1024), node('b', 2000, 1024)],
      pending: [member('big', 0), member('big', 1), member('big', 2), member('pair', 3), member('pair', 4)],
      placementsMax: 100,
    });
    expect(placedOn(plan)).toEqual({ pair3: 'a', pair4: 'b' });
    expect(plan.waiting.map((w) => w.taskId)).toEqual(['big0', 'big1', 'big2']);
    expect(plan.waiting[0]?.reason).toMatch(
      /^group big starts its 3 tasks together; big2 waits: no node has 2 CPU/,
    );
  });
});

describe('allocate: co-located groups', () => {
  const member = (group: string, i: number, cpuMillis: number, driver = 'exec'): AllocatorTask => ({
    ...task(`${group}${i}`, cpuMillis, 10, 50, i),
    driver,
    group,
    colocated: true,
  });

  it('puts every member of a co-located group on one node that takes them all', () => {
    const plan = allocate({
      // a fits the first member alone; only b takes both.
      nodes: [node('a', 700, 1024), node('b', 1000, 1024), { ...node('c', 1000, 1024), drivers: ['exec'] }],
      pending: [member('web', 0, 600), member('web', 1, 300, 'docker')],
      placementsMax: 100,
    });
    expect(placedOn(plan)).toEqual({ web0: 'b', web1: 'b' });
  });

  it('waits, all together, when no node takes them all, though separate nodes would', () => {
    const plan = allocate({
      nodes: [node('a', 1000, 1024), node('b', 1000, 1024)],
      pending: [member('pair', 0, 600), member('pair', 1, 600), task('solo', 400, 10, 50, 5)],
      placementsMax: 100,
    });
    expect(placedOn(plan)).toEqual({ solo: 'a' });
    expect(plan.waiting.map((w) => w.taskId)).toEqual(['pair0', 'pair1']);
    expect(plan.waiting[0]?.reason).toBe(
      'group pair runs its 2 tasks on one node; no node has room for all of them at once',
    );
  });

  it('keeps a node free of a group that does not fit it, in the incremental allocator too', () => {
    const allocator = new Allocator();
    allocator.addNode(node('a', 1000, 1024));
    allocator.addPending(member('g', 0, 500));
    allocator.addPending(member('g', 1, 600));
    expect(allocator.plan({ placementsMax: 100 }).placements).toEqual([]);
    allocator.addNode(node('b', 2000, 1024));
    expect(placedOn(allocator.plan({ placementsMax: 100 }))).toEqual({ g0: 'b', g1: 'b' });
  });
});

describe('allocate: preemption', () => {
  const full = (id: string, running: RunningTask[]): { node: AllocatorNode; running: RunningTask[] } => {
    let cpuMillis = 4000;
    for (const r of running) cpuMillis -= r.request.cpuMillis;
    return { node: { ...node(id, 4000, 4096), free: { cpuMillis, memoryBytes: 4000 * MiB } }, running };
  };
  const runningTask = (id: string, nodeId: string, cpuMillis: number, priority: number): RunningTask => ({
    id,
    nodeId,
    priority,
    request: { cpuMillis, memoryBytes: MiB },
  });

  it('evicts the fewest lower-priority tasks, at least the gap lower, and waits for them', () => {
    const a = full('a', [
      runningTask('a1', 'a', 1000, 10),
      runningTask('a2', 'a', 1000, 10),
      runningTask('a3', 'a', 2000, 30),
    ]);
    const b = full('b', [runningTask('b1', 'b', 2000, 45), runningTask('b2', 'b', 2000, 50)]);
    const plan = allocate({
      nodes: [a.node, b.node],
      running: [...a.running, ...b.running],
      pending: [task('urgent', 2000, 100, 50, 1), task('mild', 1000, 100, 15, 2)],
      placementsMax: 100,
    });
    // One victim (a3) beats two (a1, a2); b's tasks are within 10 of 50. 'mild' (15) may evict only
    // priority ≤ 5: none.
    expect(plan.preemptions).toEqual([{ taskId: 'a3', nodeId: 'a', forTaskId: 'urgent' }]);
    expect(plan.placements).toEqual([]);
    expect(plan.waiting).toEqual([
      { taskId: 'urgent', reason: 'preempting 1 lower-priority task on node a' },
      { taskId: 'mild', reason: 'no node has 1 CPU and 100 MiB free (2 large enough, all busy)' },
    ]);
  });

  it('a nominated task waits on its node while the victims exit, and the node stays held', () => {
    const plan = allocate({
      nodes: [
        { ...node('a', 2000, 1024), free: { cpuMillis: 0, memoryBytes: 1024 * MiB } },
        node('b', 1000, 1024),
      ],
      running: [{ ...runningTask('victim', 'a', 2000, 10), terminating: true }],
      pending: [
        { ...task('urgent', 2000, 100, 50, 1), nominatedNodeId: 'a' },
        task('small', 500, 100, 10, 2),
      ],
      placementsMax: 100,
    });
    expect(plan.preemptions).toEqual([]);
    expect(plan.placements).toEqual([{ taskId: 'small', nodeId: 'b' }]);
    expect(plan.waiting).toEqual([
      { taskId: 'urgent', reason: 'waiting on node a for preempted tasks to exit' },
    ]);
    expect(plan.reservations).toEqual([{ taskId: 'urgent', nodeId: 'a' }]);
  });

  it('never preempts with the gap set to Infinity, nor tasks marked not preemptible', () => {
    const a = full('a', [runningTask('low', 'a', 4000, 0)]);
    const input = {
      nodes: [a.node],
      running: a.running,
      pending: [task('urgent', 1000, 100, 100)],
      placementsMax: 10,
    };
    expect(allocate({ ...input, preemptionPriorityGap: Infinity }).preemptions).toEqual([]);
    expect(
      allocate({ ...input, running: [{ ...runningTask('low', 'a', 4000, 0), preemptible: false }] })
        .preemptions,
    ).toEqual([]);
    expect(allocate(input).preemptions).toEqual([{ taskId: 'low', nodeId: 'a', forTaskId: 'urgent' }]);
  });
});

describe('Allocator (incremental)', () => {
  it('fill three nodes, queue mixed priorities, free capacity: they start highest first, then oldest', () => {
    const allocator = new Allocator();
    for (const id of ['a', 'b', 'c']) allocator.addNode(node(id, 1000, 1024));
    for (let i = 0; i < 3; i++) allocator.addPending(task(`filler${i}`, 1000, 100, 50, i));
    let plan = allocator.plan({ placementsMax: 100 });
    expect(plan.placements).toHaveLength(3);
    for (const p of plan.placements) allocator.taskPlaced(p.taskId, p.nodeId);
    allocator.addPending(task('low', 1000, 100, 10, 10));
    allocator.addPending(task('high-late', 1000, 100, 90, 12));
    allocator.addPending(task('high-early', 1000, 100, 90, 11));
    allocator.addPending(task('mid', 1000, 100, 50, 13));
    const started: string[] = [];
    for (let i = 0; i < 3; i++) {
      allocator.taskEnded(`filler${i}`);
      plan = allocator.plan({ placementsMax: 100, waiting: 'changed' });
      expect(plan.placements).toHaveLength(1);
      for (const p of plan.placements) {
        allocator.taskPlaced(p.taskId, p.nodeId);
        started.push(p.taskId);
      }
    }
    expect(started).toEqual(['high-early', 'high-late', 'mid']);
    // The low one still waits; nothing changed for it, so 'changed' reports nothing new.
    expect(allocator.plan({ placementsMax: 100, waiting: 'changed' }).waiting).toEqual([]);
  });

  it('plan() changes nothing until placements are reported', () => {
    const allocator = new Allocator();
    allocator.addNode(node('a', 1000, 1024));
    allocator.addPending(task('t', 1000, 100));
    const first = allocator.plan({ placementsMax: 10 });
    expect(allocator.plan({ placementsMax: 10 })).toEqual(first);
    allocator.taskPlaced('t', 'a');
    allocator.addPending(task('u', 1000, 100, 50, 1));
    expect(allocator.plan({ placementsMax: 10 }).placements).toEqual([]);
  });
});
