/**
 * Seeded simulations of frameworks against the offer book on a small cluster, one second per step: tasks
 * end, the book runs a round, the built-in scheduler (framework zero) places its work on the room the book
 * does not hold, and each framework answers its events by its behaviour. After every step the invariants
 * are checked from outside the book: an offer is held by one framework, offers and tasks never exceed a
 * node's capacity, and no port is held twice. Any failure names its seed and replays from it.
 */
import { describe, expect, it } from 'vitest';
import { dominantShare, type NamespacePolicy, type Resources } from '../allocator/index.ts';
import { seededRandom, type Random } from '../shared/random.ts';
import { resolveFrameworkInfo } from './commands.ts';
import { OfferBook } from './offers.ts';
import { FrameworkRegistry } from './registry.ts';
import type { PortRange, TaskResources } from './resources.ts';
import type { BuiltInDemand, LaunchTask, Offer, OfferView, SchedulerEvent } from './types.ts';

const GiB = 1024 ** 3;
const stepMs = 1000;
const nodeCapacity: Resources = { cpuMillis: 8000, memoryBytes: 32 * GiB };
const nodePorts: PortRange = { begin: 31_000, end: 31_009 };
/** Every framework task: a CPU and 4 GiB, an eighth of a node on both. */
const taskShape: Resources = { cpuMillis: 1000, memoryBytes: 4 * GiB };

type Behaviour =
  /** Accepts every offer at once, filling it with tasks. */
  | 'greedy'
  /** Never answers. */
  | 'silent'
  /** Declines every offer for a random 1–60 s. */
  | 'decliner'
  /** Suppresses and revives at random; accepts what it is offered. */
  | 'fickle'
  /** Keeps offers a few seconds, then accepts them all at once, one node's tasks sometimes too large. */
  | 'batcher';

interface SimFramework {
  readonly id: string;
  readonly role: string;
  readonly priority: number;
  readonly behaviour: Behaviour;
  suppressed: boolean;
  /** Offers it holds (the batcher). */
  readonly held: Map<string, Offer>;
}

interface Running {
  readonly id: string;
  readonly nodeId: string;
  readonly namespace: string;
  readonly frameworkId: string | null;
  readonly request: TaskResources;
  readonly endsAtMs: number;
}

interface PendingBuiltIn {
  readonly id: string;
  readonly priority: number;
  readonly request: Resources;
  readonly durationMs: number;
}

class Sim {
  nowMs = 0;
  readonly book = new OfferBook({ epoch: 'sim' });
  readonly registry = new FrameworkRegistry();
  readonly running = new Map<string, Running>();
  readonly frameworks = new Map<string, SimFramework>();
  readonly builtIn: PendingBuiltIn[] = [];
  readonly nodeIds: string[];
  /** Filters a decliner asked for: framework → node → until. */
  readonly filters = new Map<string, Map<string, number>>();
  taskSeq = 0;

  readonly random: Random;
  readonly namespaces: readonly NamespacePolicy[];
  readonly seed: number;

  constructor(seed: number, nodeCount: number, namespaces: readonly NamespacePolicy[] = []) {
    this.seed = seed;
    this.random = seededRandom(seed);
    this.namespaces = namespaces;
    this.nodeIds = Array.from({ length: nodeCount }, (_, i) => `node-${String(i).padStart(2, '0')}`);
  }

  addFramework(id: string, role: string, behaviour: Behaviour, priority = 50): void {
    const info = resolveFrameworkInfo({ name: id, user: 'sim', role, priority });
    const result = this.registry.apply({
      type: 'subscribeFramework',
      frameworkId: id,
      resubscribe: false,
      streamId: `stream-${id}`,
      info,
      atMs: this.nowMs,
    });
    expect(result.ok).toBe(true);
    this.book.subscribe({ id, info });
    this.book.revive(id);
    this.frameworks.set(id, { id, role, priority, behaviour, suppressed: false, held: new Map() });
  }

  view(): OfferView {
    const used = new Map<string, { cpuMillis: number; memoryBytes: number; ports: number[] }>();
    const namespaceUsage = new Map<string, Resources>();
    const frameworkUsage = new Map<string, Resources>();
    const add = (map: Map<string, Resources>, key: string, request: Resources): void => {
      const held = map.get(key) ?? { cpuMillis: 0, memoryBytes: 0 };
      map.set(key, {
        cpuMillis: held.cpuMillis + request.cpuMillis,
        memoryBytes: held.memoryBytes + request.memoryBytes,
      });
    };
    for (const task of this.running.values()) {
      const node = used.get(task.nodeId) ?? { cpuMillis: 0, memoryBytes: 0, ports: [] };
      node.cpuMillis += task.request.cpuMillis;
      node.memoryBytes += task.request.memoryBytes;
      node.ports.push(...(task.request.ports ?? []));
      used.set(task.nodeId, node);
      add(namespaceUsage, task.namespace, task.request);
      if (task.frameworkId !== null) add(frameworkUsage, task.frameworkId, task.request);
    }
    return {
      nodes: this.nodeIds.map((id) => {
        const node = used.get(id) ?? { cpuMillis: 0, memoryBytes: 0, ports: [] };
        return {
          id,
          capacity: nodeCapacity,
          free: {
            cpuMillis: nodeCapacity.cpuMillis - node.cpuMillis,
            memoryBytes: nodeCapacity.memoryBytes - node.memoryBytes,
          },
          up: true,
          schedulable: true,
          ports: freePorts(node.ports),
        };
      }),
      namespaces: this.namespaces,
      namespaceUsage,
      frameworkUsage,
      builtIn: this.builtIn.map((work): BuiltInDemand => ({
        priority: work.priority,
        namespace: 'default',
        request: work.request,
      })),
    };
  }

  /** One second: tasks end, a round, framework zero places, frameworks answer; invariants after each part. */
  step(): SchedulerEvent[] {
    this.nowMs += stepMs;
    for (const task of [...this.running.values()])
      if (task.endsAtMs <= this.nowMs) {
        this.running.delete(task.id);
        const update = this.registry.recordStatus(
          task.id,
          { state: 'TASK_FINISHED', message: '', nodeId: task.nodeId },
          this.nowMs,
        );
        if (update && task.frameworkId !== null)
          this.registry.apply({
            type: 'acknowledgeFrameworkUpdate',
            frameworkId: task.frameworkId,
            taskId: update.taskId,
            uuid: update.uuid,
            atMs: this.nowMs,
          });
      }
    const events = this.book.offerRound(this.view(), this.nowMs);
    this.check('after the round');
    this.checkBuiltInNotBlocked();
    this.placeBuiltIn();
    this.check('after framework zero');
    for (const framework of [...this.frameworks.values()].sort((a, b) => (a.id < b.id ? -1 : 1)))
      this.answer(
        framework,
        events.filter((event) => event.frameworkId === framework.id),
      );
    this.check('after the frameworks');
    return events;
  }

  /** Pending built-in work, placed first-fit on what the book does not hold, as the shell feeds the allocator. */
  private placeBuiltIn(): void {
    const view = this.view();
    for (const work of [...this.builtIn]) {
      const node = view.nodes.find((candidate) => {
        const held = this.book.heldOn(candidate.id);
        return (
          candidate.free.cpuMillis - held.cpuMillis >= work.request.cpuMillis &&
          candidate.free.memoryBytes - held.memoryBytes >= work.request.memoryBytes
        );
      });
      if (!node) continue;
      this.builtIn.splice(this.builtIn.indexOf(work), 1);
      this.running.set(work.id, {
        id: work.id,
        nodeId: node.id,
        namespace: 'default',
        frameworkId: null,
        request: work.request,
        endsAtMs: this.nowMs + work.durationMs,
      });
      // The next placement sees this one.
      (node.free as { cpuMillis: number }).cpuMillis -= work.request.cpuMillis;
      (node.free as { memoryBytes: number }).memoryBytes -= work.request.memoryBytes;
    }
  }

  submitBuiltIn(priority: number, request: Resources, durationMs: number): void {
    this.builtIn.push({ id: `builtin-${++this.taskSeq}`, priority, request, durationMs });
  }

  private answer(framework: SimFramework, events: readonly SchedulerEvent[]): void {
    for (const event of events) {
      if (event.type === 'RESCIND') framework.held.delete(event.offerId);
      if (event.type !== 'OFFERS') continue;
      // Property: a suppressed framework gets no offers.
      this.require(!framework.suppressed, () => `${framework.id} was offered while suppressed`);
      for (const offer of event.offers) {
        // Property: a declined node is not offered again within refuse_seconds.
        const until = this.filters.get(framework.id)?.get(offer.nodeId) ?? 0;
        this.require(until <= this.nowMs, () => `${offer.nodeId} offered to ${framework.id} before ${until}`);
        framework.held.set(offer.id, offer);
      }
    }
    switch (framework.behaviour) {
      case 'silent':
        return;
      case 'greedy':
        for (const offer of [...framework.held.values()]) this.acceptFilled(framework, [offer], false);
        return;
      case 'decliner': {
        for (const offer of [...framework.held.values()]) {
          const refuseMs = this.random.int(1, 61) * 1000;
          this.book.decline(framework.id, [offer.id], refuseMs, this.nowMs);
          const filters = this.filters.get(framework.id) ?? new Map<string, number>();
          filters.set(offer.nodeId, Math.max(filters.get(offer.nodeId) ?? 0, this.nowMs + refuseMs));
          this.filters.set(framework.id, filters);
          framework.held.delete(offer.id);
        }
        return;
      }
      case 'fickle':
        for (const offer of [...framework.held.values()]) this.acceptFilled(framework, [offer], false);
        if (this.random.next() < 0.1) {
          framework.suppressed = !framework.suppressed;
          if (framework.suppressed) this.book.suppress(framework.id);
          else this.book.revive(framework.id);
        }
        return;
      case 'batcher':
        if (framework.held.size >= 2 && this.random.next() < 0.3)
          this.acceptFilled(framework, [...framework.held.values()], this.random.next() < 0.3);
        return;
    }
  }

  /** Accepts offers with as many tasks as fit on each node; `spoil` makes one node's tasks too large. */
  private acceptFilled(framework: SimFramework, offers: readonly Offer[], spoil: boolean): void {
    const tasks: LaunchTask<null>[] = [];
    const spoiled = spoil ? offers[this.random.int(0, offers.length)]?.nodeId : undefined;
    for (const offer of offers) {
      const count = Math.min(
        Math.floor(offer.resources.cpuMillis / taskShape.cpuMillis),
        Math.floor(offer.resources.memoryBytes / taskShape.memoryBytes),
      );
      const ports = (offer.resources.ports ?? []).flatMap((range) =>
        Array.from({ length: range.end - range.begin + 1 }, (_, i) => range.begin + i),
      );
      for (let i = 0; i < count; i++) {
        const port = ports[i];
        tasks.push({
          taskId: `${framework.id}-t${++this.taskSeq}`,
          nodeId: offer.nodeId,
          resources: port === undefined ? taskShape : { ...taskShape, ports: [port] },
          spec: null,
        });
      }
      if (offer.nodeId === spoiled)
        tasks.push({
          taskId: `${framework.id}-t${++this.taskSeq}`,
          nodeId: offer.nodeId,
          resources: { cpuMillis: offer.resources.cpuMillis + 1, memoryBytes: 0 },
          spec: null,
        });
    }
    const before = this.running.size;
    const result = this.book.accept(
      { frameworkId: framework.id, offerIds: offers.map((offer) => offer.id), tasks },
      this.nowMs,
    );
    for (const offer of offers) framework.held.delete(offer.id);
    // Property: all or nothing, across nodes.
    this.require(
      result.ok === (spoiled === undefined),
      () => `accept by ${framework.id} (spoiled ${spoiled ?? 'none'})`,
    );
    if (!result.ok) {
      this.require(result.error.frameworkCode === 'TASKS_DO_NOT_FIT', () => result.error.message);
      const named = offers.map((offer) => offer.id).sort();
      this.require(
        [...result.released].sort().join() === named.join(),
        () => 'a refused accept releases its offers',
      );
      this.require(this.running.size === before, () => 'a refused accept launches nothing');
      return;
    }
    this.require(result.launches.length === tasks.length, () => 'an accept launches every task');
    // The launch command commits: the tasks run, the registry knows them, the book lets go.
    const error = this.registry.addTasks(
      framework.id,
      result.launches.map((launch) => ({
        taskId: launch.taskId,
        clusterTaskId: launch.taskId,
        nodeId: launch.nodeId,
      })),
      this.nowMs,
    );
    this.require(error === null, () => `the registry refused the launch: ${error?.message ?? ''}`);
    for (const launch of result.launches)
      this.running.set(launch.taskId, {
        id: launch.taskId,
        nodeId: launch.nodeId,
        namespace: framework.role,
        frameworkId: framework.id,
        request: launch.resources,
        endsAtMs: this.nowMs + this.random.int(10, 61) * 1000,
      });
    this.book.settle(result.acceptId);
  }

  /** The invariants, computed here from the offers and tasks, not from the book's own sums. */
  private check(when: string): void {
    const view = this.view();
    const problems = this.book.checkInvariants(view);
    this.require(problems.length === 0, () => `${when}: ${problems.join('; ')}`);
    const offers = this.book.offers();
    this.require(new Set(offers.map((offer) => offer.id)).size === offers.length, () => 'an offer id twice');
    const held = new Map<string, { cpuMillis: number; memoryBytes: number; ports: Set<number> }>();
    const hold = (nodeId: string, request: Resources, ports: readonly number[]): void => {
      const node = held.get(nodeId) ?? { cpuMillis: 0, memoryBytes: 0, ports: new Set<number>() };
      held.set(nodeId, node);
      node.cpuMillis += request.cpuMillis;
      node.memoryBytes += request.memoryBytes;
      for (const port of ports) {
        this.require(!node.ports.has(port), () => `${when}: port ${port} on ${nodeId} held twice`);
        node.ports.add(port);
      }
    };
    for (const task of this.running.values()) hold(task.nodeId, task.request, task.request.ports ?? []);
    for (const offer of offers)
      hold(
        offer.nodeId,
        offer.resources,
        (offer.resources.ports ?? []).flatMap((range) =>
          Array.from({ length: range.end - range.begin + 1 }, (_, i) => range.begin + i),
        ),
      );
    for (const [nodeId, node] of held)
      this.require(
        node.cpuMillis <= nodeCapacity.cpuMillis && node.memoryBytes <= nodeCapacity.memoryBytes,
        () => `${when}: tasks and offers on ${nodeId} exceed its capacity`,
      );
    for (const framework of this.frameworks.values()) {
      const live = this.registry.liveClusterTaskIds(framework.id).sort();
      const running = [...this.running.values()]
        .filter((task) => task.frameworkId === framework.id)
        .map((task) => task.id)
        .sort();
      this.require(live.join() === running.join(), () => `${when}: the registry's tasks of ${framework.id}`);
    }
  }

  /**
   * Framework zero's property: built-in work that outranks every framework, and would fit on some node were
   * offers not there, fits somewhere on what the book does not hold once a round has run.
   */
  private checkBuiltInNotBlocked(): void {
    const view = this.view();
    const top = Math.max(...[...this.frameworks.values()].map((framework) => framework.priority));
    for (const work of this.builtIn) {
      if (work.priority <= top) continue;
      const fits = (free: Resources, held: Resources): boolean =>
        free.cpuMillis - held.cpuMillis >= work.request.cpuMillis &&
        free.memoryBytes - held.memoryBytes >= work.request.memoryBytes;
      const couldFit = view.nodes.some((node) => fits(node.free, { cpuMillis: 0, memoryBytes: 0 }));
      if (!couldFit) continue;
      this.require(
        view.nodes.some((node) => fits(node.free, this.book.heldOn(node.id))),
        () => `built-in ${work.id} is blocked by offers`,
      );
    }
  }

  /** Checks in the hot loop: a plain throw naming seed and time (vitest's expect is too slow here). */
  require(condition: boolean, message: () => string): void {
    if (!condition) throw new Error(`seed ${this.seed} at ${this.nowMs} ms: ${message()}`);
  }

  /** What each namespace's tasks hold, as a share of the cluster. */
  shares(): Map<string, number> {
    const total: Resources = {
      cpuMillis: nodeCapacity.cpuMillis * this.nodeIds.length,
      memoryBytes: nodeCapacity.memoryBytes * this.nodeIds.length,
    };
    const shares = new Map<string, number>();
    for (const [namespace, usage] of this.view().namespaceUsage ?? [])
      shares.set(namespace, dominantShare(usage, total));
    return shares;
  }
}

function freePorts(used: readonly number[]): PortRange[] {
  const free: PortRange[] = [];
  for (let port = nodePorts.begin; port <= nodePorts.end; port++) {
    if (used.includes(port)) continue;
    const last = free[free.length - 1];
    if (last && last.end === port - 1) free[free.length - 1] = { begin: last.begin, end: port };
    else free.push({ begin: port, end: port });
  }
  return free;
}

function simulation(seed: number, nodeCount: number, namespaces: readonly NamespacePolicy[] = []): Sim {
  return new Sim(seed, nodeCount, namespaces);
}

const seeds = [1, 2, 3, 4, 5];

describe('frameworks on a simulated cluster', () => {
  it('two greedy frameworks with weights 1 and 3 converge to dominant shares of 25 % and 75 % (±5 %)', () => {
    for (const seed of seeds) {
      const sim = simulation(seed, 16, [
        { name: 'light', weight: 1 },
        { name: 'heavy', weight: 3 },
      ]);
      sim.addFramework('a', 'light', 'greedy');
      sim.addFramework('b', 'heavy', 'greedy');
      let light = 0;
      let heavy = 0;
      let samples = 0;
      for (let step = 0; step < 900; step++) {
        sim.step();
        if (step < 300) continue;
        const shares = sim.shares();
        light += shares.get('light') ?? 0;
        heavy += shares.get('heavy') ?? 0;
        samples++;
      }
      expect(Math.abs(light / samples - 0.25), `seed ${seed}: light ${light / samples}`).toBeLessThanOrEqual(
        0.05,
      );
      expect(Math.abs(heavy / samples - 0.75), `seed ${seed}: heavy ${heavy / samples}`).toBeLessThanOrEqual(
        0.05,
      );
    }
  });

  it('a framework that never answers has its offers rescinded at the timeout, and the other is not starved', () => {
    for (const seed of seeds) {
      const sim = simulation(seed, 16);
      sim.addFramework('mute', 'quiet', 'silent');
      sim.addFramework('busy', 'work', 'greedy');
      const offeredAt = new Map<string, number>();
      let rescinds = 0;
      let busyShare = 0;
      const steps = 600;
      for (let step = 0; step < steps; step++) {
        for (const event of sim.step()) {
          if (event.type === 'OFFERS' && event.frameworkId === 'mute')
            for (const offer of event.offers) offeredAt.set(offer.id, offer.offeredAtMs);
          if (event.type === 'RESCIND') {
            const waitedMs = sim.nowMs - (offeredAt.get(event.offerId) ?? -Infinity);
            // Rescinded in the first round at or after its timeout: never early, at most a step late.
            sim.require(
              event.frameworkId === 'mute' && waitedMs >= 30_000 && waitedMs < 30_000 + stepMs,
              () => `${event.offerId} rescinded after ${waitedMs} ms`,
            );
            rescinds++;
          }
        }
        busyShare += sim.shares().get('work') ?? 0;
      }
      expect(rescinds, `seed ${seed}`).toBeGreaterThan(0);
      // Its fair half, less a node's worth for granularity.
      expect(busyShare / steps, `seed ${seed}`).toBeGreaterThanOrEqual(0.5 - 1 / 16);
    }
  });

  it('mixed behaviours and built-in work: invariants after every step, filters, suppression, all-or-nothing', () => {
    for (const seed of seeds) {
      const sim = simulation(seed, 12, [{ name: 'capped', weight: 2, quota: { cpuMillis: 20_000 } }]);
      sim.addFramework('greedy', 'web', 'greedy');
      sim.addFramework('mute', 'web', 'silent', 40);
      sim.addFramework('choosy', 'batch', 'decliner');
      sim.addFramework('fickle', 'capped', 'fickle', 60);
      sim.addFramework('batch', 'batch', 'batcher');
      let accepted = 0;
      for (let step = 0; step < 400; step++) {
        if (sim.random.next() < 0.3)
          sim.submitBuiltIn(
            sim.random.next() < 0.5 ? 90 : 20,
            { cpuMillis: 500 * sim.random.int(1, 9), memoryBytes: GiB * sim.random.int(1, 9) },
            sim.random.int(5, 40) * 1000,
          );
        sim.step();
        accepted = sim.running.size;
      }
      expect(accepted, `seed ${seed}`).toBeGreaterThan(0);
      const capped = [...sim.running.values()]
        .filter((task) => task.namespace === 'capped')
        .reduce((sum, task) => sum + task.request.cpuMillis, 0);
      expect(capped, `seed ${seed}: quota`).toBeLessThanOrEqual(20_000);
    }
  });
});
