/**
 * Property tests over random clusters and queues, each case from its own seed (printed on failure, so
 * `caseSeed` reproduces it). Sizes are small so thousands of cases run in seconds.
 */
import { describe, expect, it } from 'vitest';
import {
  Allocator,
  allocate,
  type AllocatorInput,
  type AllocatorNode,
  type AllocatorTask,
  type Plan,
  preemptionPriorityGapDefault,
  type RunningTask,
} from '../../src/allocator/index.ts';
import { seededRandom, type Random } from '../../src/shared/random.ts';
import {
  add,
  amounts,
  chance,
  pick,
  portsOf,
  randomInput,
  randomNode,
  randomPending,
  resources,
  shuffled,
  violation,
} from './scenario.ts';

const cases = 2000;
const baseSeed = 0x5eed;
const caseSeed = (property: number, i: number): number => (baseSeed + property * 1_000_003 + i) >>> 0;

function forAll(property: number, count: number, check: (random: Random, seed: number) => void): void {
  for (let i = 0; i < count; i++) {
    const seed = caseSeed(property, i);
    check(seededRandom(seed), seed);
  }
}

describe('allocator properties', () => {
  it(`never overcommits, honours constraints, caps, quotas, gangs and the gap, and skips no one (${cases} cases, plain)`, () => {
    forAll(1, cases, (random, seed) => {
      const input = randomInput(random, { features: false, nodesMax: 8, pendingMax: 30 });
      expect(violation(input, allocate(input)), `seed ${seed}`).toBeNull();
    });
  });

  it(`the same with ports, devices, distinct, affinity, spread, gangs, nominations, caps and quotas (${cases} cases)`, () => {
    forAll(2, cases, (random, seed) => {
      const input = randomInput(random, { features: true, nodesMax: 8, pendingMax: 30 });
      expect(violation(input, allocate(input)), `seed ${seed}`).toBeNull();
    });
  });

  it(`is deterministic: the same input in any order gives the same plan (${cases} cases)`, () => {
    forAll(3, cases, (random, seed) => {
      const input = randomInput(random, { features: true, nodesMax: 8, pendingMax: 30 });
      const reordered: AllocatorInput = {
        ...input,
        nodes: shuffled(random, input.nodes),
        pending: shuffled(random, input.pending),
        running: shuffled(random, input.running ?? []),
        namespaces: shuffled(random, input.namespaces ?? []),
      };
      expect(allocate(reordered), `seed ${seed}`).toEqual(allocate(input));
    });
  });

  it(`preempts only when needed, with the fewest victims a node allows (${cases} cases)`, () => {
    let preempted = 0;
    forAll(4, cases, (random, seed) => {
      const input = randomInput(random, { features: false, nodesMax: 4, pendingMax: 8 });
      const plan = allocate(input);
      const gap = input.preemptionPriorityGap ?? preemptionPriorityGapDefault;
      const byNode = new Map<string, { forTaskId: string; victims: string[] }>();
      for (const p of plan.preemptions) {
        const entry = byNode.get(p.nodeId) ?? { forTaskId: p.forTaskId, victims: [] };
        entry.victims.push(p.taskId);
        byNode.set(p.nodeId, entry);
      }
      for (const [nodeId, { forTaskId, victims }] of byNode) {
        preempted++;
        const node = input.nodes.find((n) => n.id === nodeId)!;
        const task = input.pending.find((t) => t.id === forTaskId)!;
        // Placements on the node all came before the preemption (it is held after), so they count.
        let room = amounts(node.free);
        for (const placement of plan.placements) {
          const placed = input.pending.find((t) => t.id === placement.taskId);
          if (placement.nodeId === nodeId && placed) room = add(room, amounts(placed.request), -1);
        }
        const candidates = (input.running ?? []).filter(
          (r) =>
            r.nodeId === nodeId &&
            r.preemptible !== false &&
            r.terminating !== true &&
            r.priority <= task.priority - gap,
        );
        // No smaller subset of the node's candidates would have made room (brute force).
        const smallest = smallestCover(amounts(task.request), room, candidates);
        expect(victims.length, `seed ${seed}: ${forTaskId} on ${nodeId}`).toBe(smallest);
      }
    });
    expect(preempted).toBeGreaterThan(50);
  });

  it(`an incremental allocator fed events plans exactly as allocate() on the same snapshot (${cases / 4} histories)`, () => {
    forAll(5, cases / 4, (random, seed) => {
      const history = new History(
        random,
        randomInput(random, { features: true, nodesMax: 6, pendingMax: 20 }),
      );
      for (let step = 0; step < 12; step++) {
        const fresh = allocate(history.snapshot());
        const incremental = history.allocator.plan({ placementsMax: history.placementsMax });
        expect(incremental, `seed ${seed}, step ${step}`).toEqual(fresh);
        expect(history.allocator.plan({ placementsMax: history.placementsMax }), `seed ${seed}`).toEqual(
          fresh,
        );
        history.step(random, fresh);
      }
    });
  });

  it(`'changed' waiting reports each task's reason once, until it changes (${cases / 4} histories)`, () => {
    forAll(6, cases / 4, (random, seed) => {
      const history = new History(
        random,
        randomInput(random, { features: true, nodesMax: 6, pendingMax: 20 }),
      );
      const reported = new Map<string, string>();
      for (let step = 0; step < 8; step++) {
        const changed = history.allocator.plan({ placementsMax: history.placementsMax, waiting: 'changed' });
        for (const w of changed.waiting) {
          expect(reported.get(w.taskId), `seed ${seed}: ${w.taskId} reported twice alike`).not.toBe(w.reason);
          reported.set(w.taskId, w.reason);
        }
        const all = allocate(history.snapshot());
        for (const w of all.waiting)
          if (w.reason !== 'waiting for the next allocation round')
            expect(reported.get(w.taskId), `seed ${seed}, step ${step}: ${w.taskId}`).toBe(w.reason);
        history.step(random, all);
      }
    });
  });
});

/** The fewest candidates whose requests, with `room`, cover `need`: exhaustive. */
function smallestCover(
  need: ReturnType<typeof amounts>,
  room: ReturnType<typeof amounts>,
  candidates: readonly RunningTask[],
): number {
  let best = Infinity;
  for (let mask = 0; mask < 1 << candidates.length; mask++) {
    let total = room;
    let count = 0;
    candidates.forEach((c, i) => {
      if ((mask & (1 << i)) !== 0) {
        total = add(total, amounts(c.request));
        count++;
      }
    });
    if (count < best && covers(need, total)) best = count;
  }
  return best;
}

function covers(need: ReturnType<typeof amounts>, total: ReturnType<typeof amounts>): boolean {
  if (need.cpu > total.cpu || need.memory > total.memory || need.disk > total.disk) return false;
  return Object.entries(need.devices).every(([kind, count]) => count <= (total.devices[kind] ?? 0));
}

/**
 * A cluster's history: a model of what runs and waits (the truth a leader's log would hold), the same
 * events fed to one long-lived Allocator, and a snapshot of the model for allocate() to compare with.
 */
class History {
  readonly allocator: Allocator;
  readonly placementsMax: number;
  private readonly input: AllocatorInput;
  private readonly nodes = new Map<string, AllocatorNode>();
  private readonly running = new Map<string, RunningTask>();
  private readonly pending = new Map<string, AllocatorTask>();
  private nextId = 0;

  constructor(random: Random, input: AllocatorInput) {
    this.input = input;
    this.placementsMax = input.placementsMax;
    const options: { preemptionPriorityGap?: number; reservationsMax?: number } = {};
    if (input.preemptionPriorityGap !== undefined)
      options.preemptionPriorityGap = input.preemptionPriorityGap;
    if (input.reservationsMax !== undefined) options.reservationsMax = input.reservationsMax;
    this.allocator = new Allocator(options);
    for (const policy of input.namespaces ?? []) this.allocator.setNamespace(policy);
    for (const policy of input.jobs ?? []) this.allocator.setJob(policy);
    // Feed the starting state in a random order: order must not matter.
    for (const node of shuffled(random, input.nodes)) {
      this.nodes.set(node.id, node);
      this.allocator.addNode(node);
    }
    for (const task of shuffled(random, input.running ?? [])) {
      this.running.set(task.id, task);
      this.allocator.addRunning(task);
    }
    for (const task of shuffled(random, input.pending)) {
      this.pending.set(task.id, task);
      this.allocator.addPending(task);
    }
  }

  snapshot(): AllocatorInput {
    const nodes: AllocatorNode[] = [];
    for (const node of this.nodes.values()) {
      let free = amounts(node.capacity);
      const ports = [...this.baselinePorts(node)];
      for (const task of this.running.values()) {
        if (task.nodeId !== node.id) continue;
        free = add(free, amounts(task.request), -1);
        ports.push(...portsOf(task));
      }
      const entry: { -readonly [K in keyof AllocatorNode]: AllocatorNode[K] } = {
        ...node,
        free: resources(free),
      };
      delete entry.portsInUse;
      if (ports.length > 0) entry.portsInUse = ports;
      nodes.push(entry);
    }
    return {
      ...this.input,
      nodes,
      running: [...this.running.values()],
      pending: [...this.pending.values()],
    };
  }

  /** One random event, applied to the model and the allocator alike. */
  step(random: Random, plan: Plan): void {
    const event = random.int(0, 7);
    if (event <= 1 && plan.placements.length > 0) {
      // Commit some of the plan (the log may reject the rest as stale).
      for (const placement of plan.placements) {
        if (!chance(random, 0.7)) {
          this.allocator.unplaced(placement.taskId);
          continue;
        }
        const task = this.pending.get(placement.taskId);
        if (!task) continue;
        this.pending.delete(task.id);
        this.running.set(task.id, toRunning(task, placement.nodeId));
        this.allocator.taskPlaced(task.id, placement.nodeId);
      }
    } else if (event === 2 && this.running.size + this.pending.size > 0) {
      const id = pick(random, [...this.running.keys(), ...this.pending.keys()]);
      this.running.delete(id);
      this.pending.delete(id);
      this.allocator.taskEnded(id);
    } else if (event === 3) {
      const task = randomPending(
        random,
        `q${this.nextId++}`,
        random.int(0, 80),
        [...this.nodes.keys()],
        true,
      );
      this.pending.set(task.id, task);
      this.allocator.addPending(task);
    } else if (event === 4 && plan.preemptions.length > 0) {
      // Commit the preemptions: victims terminate, preemptors wait nominated to their node.
      for (const p of plan.preemptions) {
        const victim = this.running.get(p.taskId);
        if (victim) {
          this.running.set(victim.id, { ...victim, terminating: true });
          this.allocator.setTerminating(victim.id);
        }
        const task = this.pending.get(p.forTaskId);
        if (task && task.nominatedNodeId !== p.nodeId) {
          this.pending.set(task.id, { ...task, nominatedNodeId: p.nodeId });
          this.allocator.nominate(task.id, p.nodeId);
        }
      }
    } else if (event === 5 && chance(random, 0.5)) {
      const node = randomNode(random, `m${this.nextId++}`, true);
      this.nodes.set(node.id, node);
      this.allocator.addNode(node);
    } else if (event === 5 && this.nodes.size > 1) {
      const nodeId = pick(random, [...this.nodes.keys()]);
      this.nodes.delete(nodeId);
      this.allocator.removeNode(nodeId);
      for (const task of [...this.running.values()]) {
        if (task.nodeId !== nodeId) continue;
        this.running.delete(task.id);
        this.allocator.taskEnded(task.id);
      }
    } else if (event === 6 && this.running.size > 0) {
      const task = pick(random, [...this.running.values()]);
      this.running.set(task.id, { ...task, terminating: true });
      this.allocator.setTerminating(task.id);
    }
  }

  /** Ports the node had in use that no listed running task accounts for. */
  private baselinePorts(node: AllocatorNode): number[] {
    const ports = [...(node.portsInUse ?? [])];
    for (const task of this.input.running ?? []) {
      if (task.nodeId !== node.id) continue;
      for (const port of portsOf(task)) {
        const at = ports.indexOf(port);
        if (at >= 0) ports.splice(at, 1);
      }
    }
    return ports;
  }
}

function toRunning(task: AllocatorTask, nodeId: string): RunningTask {
  const running: { -readonly [K in keyof RunningTask]: RunningTask[K] } = {
    id: task.id,
    nodeId,
    priority: task.priority,
    request: task.request,
  };
  if (task.namespace !== undefined) running.namespace = task.namespace;
  if (task.job !== undefined) running.job = task.job;
  if (task.ports !== undefined) running.ports = task.ports;
  return running;
}
