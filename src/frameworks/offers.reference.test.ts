/**
 * The offer book against a reference: a straightforward statement of the same policy (the book as it was
 * before its rounds were made cheap — contenders re-sorted for every node with every share recomputed,
 * in-flight launches scanned for every node, every filter looked at every round). Seeded random clusters,
 * policies, built-in work and framework calls go to both; every round's events, every call's answer, the
 * outstanding offers and what each node holds must be the same. A failure names its seed.
 */
import { describe, expect, it } from 'vitest';
import { defaultNamespace, dominantShare, type NamespacePolicy, type Resources } from '../allocator/index.ts';
import { seededRandom, type Random } from '../shared/random.ts';
import { builtInDemandsMax, offersPerFrameworkMax, refuseMsMax } from './limits.ts';
import { OfferBook } from './offers.ts';
import {
  amountsOf,
  amountsOfTask,
  coversRanges,
  fitsIn,
  minus,
  noAmounts,
  plus,
  shortOf,
  subtractRanges,
  toOfferResources,
  toResources,
  withinLimit,
  type Amounts,
  type OfferResources,
  type PortRange,
  type TaskResources,
} from './resources.ts';
import type { BuiltInDemand, BuiltInHold, Offer, OfferNode, OfferView, SchedulerEvent } from './types.ts';

const GiB = 1024 ** 3;
const cpuMillisMin = 10;
const memoryBytesMin = 32 * 1024 ** 2;

// ---- the reference -------------------------------------------------------------------------------------

const fits = (need: Amounts, room: Amounts): boolean => shortOf(need, room) === null;
const compareIds = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

interface RefContender {
  readonly id: string;
  readonly role: string;
  readonly priority: number;
}
interface RefRank {
  readonly priority: number;
  readonly namespace?: string;
}
interface RefSession extends RefContender {
  suppressed: boolean;
  minimum: Amounts | null;
  readonly filters: Map<string, { readonly untilMs: number; readonly within: Amounts | null }>;
  offerCount: number;
}
interface RefOffer {
  readonly id: string;
  readonly seq: number;
  readonly framework: RefContender;
  readonly nodeId: string;
  readonly amounts: Amounts;
  readonly offeredAtMs: number;
  readonly expiresAtMs: number;
}
interface RefNode {
  readonly id: string;
  readonly capacity: Amounts;
  readonly free: Amounts;
  readonly up: boolean;
  readonly schedulable: boolean;
}
interface RefDemand extends RefRank {
  readonly need: Amounts;
  readonly eligible: (nodeId: string) => boolean;
}

/** Shares recomputed on every question. */
class RefLedger {
  readonly policies = new Map<string, NamespacePolicy>();
  readonly namespaces = new Map<string, Amounts>();
  readonly frameworks = new Map<string, Amounts>();
  readonly capacity: Resources;
  constructor(capacity: Resources, view: OfferView) {
    this.capacity = capacity;
    for (const policy of view.namespaces ?? []) this.policies.set(policy.name, policy);
    for (const [name, usage] of view.namespaceUsage ?? []) this.namespaces.set(name, amountsOf(usage));
    for (const [id, usage] of view.frameworkUsage ?? []) this.frameworks.set(id, amountsOf(usage));
  }
  add(role: string, frameworkId: string, amounts: Amounts, sign: 1 | -1): void {
    for (const [map, key] of [
      [this.namespaces, role],
      [this.frameworks, frameworkId],
    ] as const) {
      const held = map.get(key) ?? noAmounts;
      map.set(key, sign === 1 ? plus(held, amounts) : minus(held, amounts));
    }
  }
  namespaceHeld(namespace: string): Amounts {
    return this.namespaces.get(namespace) ?? noAmounts;
  }
  namespaceKey(namespace: string): number {
    const weight = this.policies.get(namespace)?.weight ?? 1;
    return dominantShare(toResources(this.namespaceHeld(namespace)), this.capacity) / weight;
  }
  frameworkShare(id: string): number {
    return dominantShare(toResources(this.frameworks.get(id) ?? noAmounts), this.capacity);
  }
}

function refCompare(ledger: RefLedger, a: RefContender, b: RefContender): number {
  if (a.priority !== b.priority) return b.priority - a.priority;
  if (a.role !== b.role)
    return ledger.namespaceKey(a.role) - ledger.namespaceKey(b.role) || compareIds(a.role, b.role);
  return ledger.frameworkShare(a.id) - ledger.frameworkShare(b.id) || compareIds(a.id, b.id);
}

function refOutranks(ledger: RefLedger, work: RefRank, framework: RefContender): boolean {
  if (work.priority !== framework.priority) return work.priority > framework.priority;
  const namespace = work.namespace ?? defaultNamespace;
  if (namespace === framework.role) return true;
  return ledger.namespaceKey(namespace) <= ledger.namespaceKey(framework.role);
}

class ReferenceBook {
  private readonly sessions = new Map<string, RefSession>();
  private readonly outstanding = new Map<string, RefOffer>();
  private readonly inFlight = new Map<number, { framework: RefContender; byNode: Map<string, Amounts> }>();
  private upNodes = new Set<string>();
  private offerSeq = 0;
  private acceptSeq = 0;
  private rounds = 0;

  private readonly epoch: string;
  private readonly offerTimeoutMs: number;
  private readonly refuseMsDefault: number;

  constructor(epoch: string, offerTimeoutMs: number, refuseMsDefault: number) {
    this.epoch = epoch;
    this.offerTimeoutMs = offerTimeoutMs;
    this.refuseMsDefault = refuseMsDefault;
  }

  subscribe(id: string, role: string, priority: number): string[] {
    const released = this.unsubscribe(id);
    this.sessions.set(id, {
      id,
      role,
      priority,
      suppressed: true,
      minimum: null,
      filters: new Map(),
      offerCount: 0,
    });
    return released;
  }
  unsubscribe(id: string): string[] {
    const released = this.entries()
      .filter((offer) => offer.framework.id === id)
      .map((offer) => (this.drop(offer), offer.id));
    this.sessions.delete(id);
    return released;
  }
  suppress(id: string): void {
    this.session(id).suppressed = true;
  }
  revive(id: string, minimum?: Resources): void {
    const session = this.session(id);
    session.suppressed = false;
    session.filters.clear();
    session.minimum = minimum === undefined ? null : amountsOf(minimum);
  }
  decline(id: string, offerIds: readonly string[], refuseMs: number | undefined, nowMs: number): string[] {
    const session = this.session(id);
    const refuse = this.refuseOf(refuseMs);
    const declined: string[] = [];
    for (const offerId of new Set(offerIds)) {
      const offer = this.outstanding.get(offerId);
      if (offer?.framework.id !== id) continue;
      this.drop(offer);
      if (refuse > 0) this.filter(session, offer.nodeId, nowMs + refuse, null);
      declined.push(offerId);
    }
    return declined;
  }
  /** A valid ACCEPT only (the driver makes no other). */
  accept(
    id: string,
    offerIds: readonly string[],
    tasks: readonly { nodeId: string; resources: TaskResources }[],
    refuseMs: number | undefined,
    nowMs: number,
  ): { acceptId: number; filteredNodeIds: string[] } {
    const session = this.session(id);
    const refuse = this.refuseOf(refuseMs);
    const offered = new Map<string, Amounts>();
    for (const offerId of offerIds) {
      const offer = this.outstanding.get(offerId);
      if (offer?.framework.id !== id || offer.expiresAtMs <= nowMs) throw new Error('an invalid accept');
      offered.set(offer.nodeId, plus(offered.get(offer.nodeId) ?? noAmounts, offer.amounts));
    }
    const asked = new Map<string, Amounts>();
    for (const task of tasks)
      asked.set(task.nodeId, plus(asked.get(task.nodeId) ?? noAmounts, amountsOfTask(task.resources)));
    for (const offerId of offerIds) {
      const offer = this.outstanding.get(offerId);
      if (offer) this.drop(offer);
    }
    const filteredNodeIds: string[] = [];
    for (const [nodeId, room] of [...offered].sort(([a], [b]) => compareIds(a, b))) {
      const rest = minus(room, asked.get(nodeId) ?? noAmounts);
      const empty =
        rest.cpuMillis === 0 &&
        rest.memoryBytes === 0 &&
        rest.diskBytes === 0 &&
        Object.keys(rest.devices).length === 0 &&
        rest.ports.length === 0;
      if (refuse > 0 && !empty) {
        this.filter(session, nodeId, nowMs + refuse, rest);
        filteredNodeIds.push(nodeId);
      }
    }
    const acceptId = ++this.acceptSeq;
    if (asked.size > 0)
      this.inFlight.set(acceptId, {
        framework: { id, role: session.role, priority: session.priority },
        byNode: asked,
      });
    return { acceptId, filteredNodeIds };
  }
  settle(acceptId: number): boolean {
    return this.inFlight.delete(acceptId);
  }
  offers(): Offer[] {
    return this.entries().map((offer) => this.publicOffer(offer));
  }
  heldOn(nodeId: string): OfferResources {
    return toOfferResources(this.held(nodeId));
  }

  offerRound(view: OfferView, nowMs: number): SchedulerEvent[] {
    const nodes = new Map<string, RefNode>();
    for (const node of view.nodes)
      nodes.set(node.id, {
        id: node.id,
        capacity: amountsOf(node.capacity),
        free: amountsOf({
          cpuMillis: Math.max(0, node.free.cpuMillis),
          memoryBytes: Math.max(0, node.free.memoryBytes),
          diskBytes: Math.max(0, node.free.diskBytes ?? 0),
          devices: Object.fromEntries(
            Object.entries(node.free.devices ?? {}).map(([kind, count]) => [kind, Math.max(0, count)]),
          ),
          ports: node.ports ?? [],
        }),
        up: node.up,
        schedulable: node.schedulable,
      });
    const events: SchedulerEvent[] = [];
    const sessions = [...this.sessions.values()].sort((a, b) => compareIds(a.id, b.id));
    for (const nodeId of [...this.upNodes].sort(compareIds))
      if (nodes.get(nodeId)?.up !== true)
        for (const session of sessions) events.push({ type: 'FAILURE', frameworkId: session.id, nodeId });
    this.upNodes = new Set([...nodes.values()].filter((node) => node.up).map((node) => node.id));
    for (const offer of this.entries()) {
      const node = nodes.get(offer.nodeId);
      const reason =
        node?.up !== true
          ? 'its node left the cluster'
          : !node.schedulable
            ? 'its node is draining'
            : offer.expiresAtMs <= nowMs
              ? `not answered within ${this.offerTimeoutMs} ms`
              : null;
      if (reason !== null) this.rescind(offer, reason, events);
    }
    const offerNodes = [...new Set(this.entries().map((offer) => offer.nodeId))].sort(compareIds);
    for (const nodeId of offerNodes) {
      const node = nodes.get(nodeId);
      if (!node) throw new Error('an offer on an unknown node');
      for (const offer of this.offersOn(nodeId).sort((a, b) => b.seq - a.seq)) {
        if (fits(this.held(nodeId), node.free)) break;
        this.rescind(offer, 'its node has less free than was offered', events);
      }
    }
    for (const session of this.sessions.values())
      for (const [nodeId, filter] of session.filters)
        if (filter.untilMs <= nowMs) session.filters.delete(nodeId);

    let capacity = noAmounts;
    for (const node of nodes.values()) if (node.up) capacity = plus(capacity, node.capacity);
    const ledger = new RefLedger(toResources(capacity), view);
    for (const offer of this.outstanding.values())
      ledger.add(offer.framework.role, offer.framework.id, offer.amounts, 1);
    for (const launch of this.inFlight.values())
      for (const amounts of launch.byNode.values())
        ledger.add(launch.framework.role, launch.framework.id, amounts, 1);
    const demands: RefDemand[] = (view.builtIn ?? [])
      .map((demand) => ({
        priority: demand.priority,
        namespace: demand.namespace ?? defaultNamespace,
        need: amountsOf(demand.request),
        eligible: demand.eligible ?? (() => true),
      }))
      .sort(
        (a, b) =>
          b.priority - a.priority || ledger.namespaceKey(a.namespace) - ledger.namespaceKey(b.namespace),
      )
      .slice(0, builtInDemandsMax)
      .filter((demand) => {
        const used = amountsOf(
          view.namespaceUsage?.get(demand.namespace) ?? { cpuMillis: 0, memoryBytes: 0 },
        );
        return fits(
          demand.need,
          withinLimit(demand.need, ledger.policies.get(demand.namespace)?.quota, used),
        );
      });
    this.reclaim(demands, nodes, ledger, events);
    this.offerRoom(view, demands, nodes, ledger, nowMs, events);
    this.rounds++;
    return events;
  }

  private reclaim(
    demands: readonly RefDemand[],
    nodes: ReadonlyMap<string, RefNode>,
    ledger: RefLedger,
    events: SchedulerEvent[],
  ): void {
    const candidates = [...nodes.values()]
      .filter((node) => node.up && node.schedulable)
      .sort((a, b) => compareIds(a.id, b.id));
    for (const demand of demands) {
      if (this.outstanding.size === 0) return;
      const eligible = candidates.filter((node) => demand.eligible(node.id));
      if (eligible.some((node) => fits(demand.need, minus(node.free, this.held(node.id))))) continue;
      for (const node of eligible) {
        const reclaimable = this.offersOn(node.id).filter((offer) =>
          refOutranks(ledger, demand, offer.framework),
        );
        if (reclaimable.length === 0) continue;
        let kept = this.inFlightOn(node.id);
        for (const offer of this.offersOn(node.id))
          if (!reclaimable.includes(offer)) kept = plus(kept, offer.amounts);
        if (!fits(demand.need, minus(node.free, kept))) continue;
        reclaimable.sort((a, b) => refCompare(ledger, b.framework, a.framework) || b.seq - a.seq);
        for (const offer of reclaimable) {
          if (fits(demand.need, minus(node.free, this.held(node.id)))) break;
          this.rescind(offer, 'reclaimed for built-in work that goes first', events, ledger);
        }
        break;
      }
    }
  }

  private offerRoom(
    view: OfferView,
    demands: readonly RefDemand[],
    nodes: ReadonlyMap<string, RefNode>,
    ledger: RefLedger,
    nowMs: number,
    events: SchedulerEvent[],
  ): void {
    const contenders = [...this.sessions.values()].filter((session) => !session.suppressed);
    if (contenders.length === 0) return;
    const ids = [...nodes.keys()].sort(compareIds);
    const start = ids.length === 0 ? 0 : this.rounds % ids.length;
    const made = new Map<string, Offer[]>();
    for (const nodeId of [...ids.slice(start), ...ids.slice(0, start)]) {
      const node = nodes.get(nodeId);
      if (!node?.up || !node.schedulable) continue;
      let room = minus(node.free, this.held(nodeId));
      if (this.tooSmall(room)) continue;
      const blockers: RefRank[] = (view.holds ?? []).filter((hold) => hold.nodeId === nodeId);
      for (const demand of demands)
        if (demand.eligible(nodeId) && fits(demand.need, room)) blockers.push(demand);
      const order = [...contenders].sort((a, b) => refCompare(ledger, a, b));
      for (const session of order) {
        if (blockers.some((work) => refOutranks(ledger, work, session))) break;
        if (session.offerCount >= offersPerFrameworkMax) continue;
        const amounts = withinLimit(
          room,
          ledger.policies.get(session.role)?.quota,
          ledger.namespaceHeld(session.role),
        );
        if (this.tooSmall(amounts)) continue;
        const filter = session.filters.get(nodeId);
        if (filter && filter.untilMs > nowMs && (filter.within === null || fits(amounts, filter.within)))
          continue;
        if (session.minimum !== null && !fits(session.minimum, amounts)) continue;
        const seq = ++this.offerSeq;
        const offer: RefOffer = {
          id: `${this.epoch}-o${seq}`,
          seq,
          framework: { id: session.id, role: session.role, priority: session.priority },
          nodeId,
          amounts,
          offeredAtMs: nowMs,
          expiresAtMs: nowMs + this.offerTimeoutMs,
        };
        this.outstanding.set(offer.id, offer);
        session.offerCount++;
        ledger.add(session.role, session.id, amounts, 1);
        made.set(session.id, [...(made.get(session.id) ?? []), this.publicOffer(offer)]);
        room = minus(room, amounts);
        if (this.tooSmall(room)) break;
      }
    }
    for (const [frameworkId, offers] of [...made].sort(([a], [b]) => compareIds(a, b)))
      events.push({ type: 'OFFERS', frameworkId, offers });
  }

  private session(id: string): RefSession {
    const session = this.sessions.get(id);
    if (!session) throw new Error(`no session ${id}`);
    return session;
  }
  private refuseOf(refuseMs: number | undefined): number {
    return refuseMs === undefined ? this.refuseMsDefault : Math.min(Math.ceil(refuseMs), refuseMsMax);
  }
  private filter(session: RefSession, nodeId: string, untilMs: number, within: Amounts | null): void {
    const old = session.filters.get(nodeId);
    if (old === undefined || (old.within !== null && within !== null))
      session.filters.set(nodeId, { untilMs, within });
    else
      session.filters.set(nodeId, {
        untilMs: Math.max(old.untilMs, untilMs),
        within: old.within === null || within === null ? null : within,
      });
  }
  private entries(): RefOffer[] {
    return [...this.outstanding.values()].sort((a, b) => a.seq - b.seq);
  }
  private offersOn(nodeId: string): RefOffer[] {
    return this.entries().filter((offer) => offer.nodeId === nodeId);
  }
  private inFlightOn(nodeId: string): Amounts {
    let held = noAmounts;
    for (const launch of this.inFlight.values()) {
      const amounts = launch.byNode.get(nodeId);
      if (amounts) held = plus(held, amounts);
    }
    return held;
  }
  private held(nodeId: string): Amounts {
    let held = this.inFlightOn(nodeId);
    for (const offer of this.offersOn(nodeId)) held = plus(held, offer.amounts);
    return held;
  }
  private drop(offer: RefOffer): void {
    this.outstanding.delete(offer.id);
    const session = this.sessions.get(offer.framework.id);
    if (session) session.offerCount--;
  }
  private rescind(offer: RefOffer, reason: string, events: SchedulerEvent[], ledger?: RefLedger): void {
    this.drop(offer);
    ledger?.add(offer.framework.role, offer.framework.id, offer.amounts, -1);
    events.push({ type: 'RESCIND', frameworkId: offer.framework.id, offerId: offer.id, reason });
  }
  private publicOffer(offer: RefOffer): Offer {
    return {
      id: offer.id,
      frameworkId: offer.framework.id,
      nodeId: offer.nodeId,
      resources: toOfferResources(offer.amounts),
      offeredAtMs: offer.offeredAtMs,
      expiresAtMs: offer.expiresAtMs,
    };
  }
  private tooSmall(amounts: Amounts): boolean {
    return amounts.cpuMillis < cpuMillisMin || amounts.memoryBytes < memoryBytesMin;
  }
}

// ---- the driver ----------------------------------------------------------------------------------------

function pick<T>(random: Random, items: readonly T[]): T {
  const item = items[random.int(0, items.length)];
  if (item === undefined) throw new Error('pick from an empty list');
  return item;
}

/** A stable pseudo-random bit of a string, for `eligible` (a pure function of the node id). */
function hashOf(text: string): number {
  let hash = 2166136261;
  for (let index = 0; index < text.length; index++) hash = Math.imul(hash ^ text.charCodeAt(index), 16777619);
  return hash >>> 0;
}

interface SimNode {
  readonly id: string;
  readonly capacity: Resources;
  readonly ports: PortRange | null;
  free: Resources;
  up: boolean;
  schedulable: boolean;
}

interface Scenario {
  readonly nodes: number;
  readonly frameworks: number;
  readonly steps: number;
}

function run(seed: number, scenario: Scenario): void {
  const random = seededRandom(seed);
  const chance = (p: number): boolean => random.next() < p;
  const withDevices = chance(0.3);
  const withDisk = chance(0.3);
  const withPorts = chance(0.5);
  const nodes: SimNode[] = Array.from({ length: scenario.nodes }, (_, index) => {
    const capacity: Resources = {
      cpuMillis: pick(random, [2000, 4000, 8000, 16_000]),
      memoryBytes: pick(random, [4, 8, 16, 32]) * GiB,
      ...(withDisk ? { diskBytes: pick(random, [0, 100, 200]) * GiB } : {}),
      ...(withDevices ? { devices: { gpu: random.int(0, 3) } } : {}),
    };
    const begin = 31_000 + index * 10;
    return {
      // Ids out of order and of several lengths, so the rotation's sort matters.
      id: `n${random.int(0, 50)}-${index}`,
      capacity,
      ports: withPorts ? { begin, end: begin + random.int(0, 5) } : null,
      free: capacity,
      up: true,
      schedulable: true,
    };
  });
  const roles = ['default', 'web', 'batch', 'ml'].slice(0, random.int(1, 5));
  const namespaces: NamespacePolicy[] = roles
    .filter(() => chance(0.7))
    .map((name) => ({
      name,
      weight: pick(random, [1, 1, 2, 3]),
      ...(chance(0.3)
        ? {
            quota: {
              cpuMillis: random.int(1, 40) * 1000,
              ...(chance(0.5) ? { memoryBytes: random.int(1, 80) * GiB } : {}),
            },
          }
        : {}),
    }));
  const priorities = [40, 50, 50, 60];
  const frameworks = Array.from({ length: scenario.frameworks }, (_, index) => ({
    id: `f${random.int(0, 100)}-${index}`,
    role: pick(random, roles),
    priority: pick(random, priorities),
  }));
  const offerTimeoutMs = pick(random, [2000, 30_000]);
  const book = new OfferBook({ epoch: 'e', offerTimeoutMs });
  const reference = new ReferenceBook('e', offerTimeoutMs, 5000);
  const minimumOf = (): Resources | undefined =>
    chance(0.5) ? undefined : { cpuMillis: random.int(1, 8) * 500, memoryBytes: random.int(1, 8) * GiB };
  for (const framework of frameworks) {
    book.subscribe({ id: framework.id, info: framework });
    reference.subscribe(framework.id, framework.role, framework.priority);
    if (chance(0.8)) {
      const minimum = minimumOf();
      book.revive(framework.id, minimum);
      reference.revive(framework.id, minimum);
    }
  }
  const inFlight: number[] = [];
  let taskSeq = 0;
  let nowMs = 0;
  for (let step = 0; step < scenario.steps; step++) {
    const at = `seed ${seed}, step ${step}`;
    nowMs += random.int(1, 1500);
    for (const node of nodes) {
      if (chance(0.03)) node.up = !node.up;
      if (chance(0.03)) node.schedulable = !node.schedulable;
      if (chance(0.3)) {
        const share = (total: number): number => Math.floor(total * random.next() * 1.1);
        node.free = {
          cpuMillis: share(node.capacity.cpuMillis),
          memoryBytes: share(node.capacity.memoryBytes),
          ...(node.capacity.diskBytes === undefined ? {} : { diskBytes: share(node.capacity.diskBytes) }),
          ...(node.capacity.devices === undefined
            ? {}
            : { devices: { gpu: random.int(-1, (node.capacity.devices['gpu'] ?? 0) + 1) } }),
        };
      }
    }
    const usage = (): Map<string, Resources> =>
      new Map(
        roles
          .filter(() => chance(0.6))
          .map((role) => [
            role,
            { cpuMillis: random.int(0, 20) * 1000, memoryBytes: random.int(0, 40) * GiB },
          ]),
      );
    const builtIn: BuiltInDemand[] = Array.from({ length: random.int(0, 4) }, (_, index) => ({
      priority: pick(random, priorities),
      ...(chance(0.7) ? { namespace: pick(random, roles) } : {}),
      request: { cpuMillis: random.int(1, 10) * 500, memoryBytes: random.int(1, 10) * GiB },
      ...(chance(0.5) ? { eligible: (nodeId: string) => hashOf(`${nodeId}/${index}`) % 3 !== 0 } : {}),
    }));
    const holds: BuiltInHold[] = nodes
      .filter(() => chance(0.05))
      .map((node) => ({
        nodeId: node.id,
        priority: pick(random, priorities),
        namespace: pick(random, roles),
      }));
    const view: OfferView = {
      nodes: nodes.map((node): OfferNode => ({
        id: node.id,
        capacity: node.capacity,
        free: node.free,
        up: node.up,
        schedulable: node.schedulable,
        ...(node.ports === null ? {} : { ports: [node.ports] }),
      })),
      namespaces,
      namespaceUsage: usage(),
      frameworkUsage: new Map(
        frameworks
          .filter(() => chance(0.5))
          .map((f) => [f.id, { cpuMillis: random.int(0, 8) * 1000, memoryBytes: random.int(0, 16) * GiB }]),
      ),
      builtIn,
      holds,
    };
    expect(book.offerRound(view, nowMs), at).toEqual(reference.offerRound(view, nowMs));
    // (No invariant check here: free room is random, so it may shrink below launches still in flight.)

    // The frameworks answer, a little later.
    const callMs = nowMs + random.int(0, 3);
    for (const framework of frameworks) {
      const roll = random.next();
      if (roll < 0.05) {
        book.suppress(framework.id);
        reference.suppress(framework.id);
        continue;
      }
      if (roll < 0.12) {
        const minimum = minimumOf();
        book.revive(framework.id, minimum);
        reference.revive(framework.id, minimum);
        continue;
      }
      if (roll < 0.14) {
        expect(book.subscribe({ id: framework.id, info: framework }), at).toEqual(
          reference.subscribe(framework.id, framework.role, framework.priority),
        );
        continue;
      }
      const held = book
        .offers()
        .filter((offer) => offer.frameworkId === framework.id && offer.expiresAtMs > callMs);
      while (held.length > 0) {
        const count = Math.min(held.length, random.int(1, 4));
        const named = held.splice(0, count);
        const refuseMs = [undefined, 0, 500, 3000, 60_000][random.int(0, 5)];
        const what = random.next();
        if (what < 0.3) {
          const ids = named.map((offer) => offer.id);
          expect(book.decline(framework.id, ids, refuseMs, callMs), at).toEqual(
            reference.decline(framework.id, ids, refuseMs, callMs),
          );
        } else if (what < 0.85) {
          const tasks = tasksFor(random, named, () => `t${++taskSeq}`);
          const result = book.accept(
            {
              frameworkId: framework.id,
              offerIds: named.map((offer) => offer.id),
              tasks,
              ...(refuseMs === undefined ? {} : { refuseMs }),
            },
            callMs,
          );
          if (!result.ok) throw new Error(`${at}: a valid accept was refused: ${result.error.message}`);
          const expected = reference.accept(
            framework.id,
            named.map((offer) => offer.id),
            tasks,
            refuseMs,
            callMs,
          );
          expect({ acceptId: result.acceptId, filteredNodeIds: result.filteredNodeIds }, at).toEqual(
            expected,
          );
          expect(result.launches).toHaveLength(tasks.length);
          inFlight.push(result.acceptId);
        }
      }
    }
    // Some launches commit (or fail): what they took is no longer held by the book.
    for (let index = inFlight.length - 1; index >= 0; index--) {
      if (!chance(0.6)) continue;
      const [acceptId] = inFlight.splice(index, 1);
      if (acceptId !== undefined) expect(book.settle(acceptId), at).toBe(reference.settle(acceptId));
    }
    expect(book.offers(), at).toEqual(reference.offers());
    for (const node of nodes)
      expect(book.heldOn(node.id), `${at}, node ${node.id}`).toEqual(reference.heldOn(node.id));
  }
}

/** Tasks that fit the named offers: per node, up to two, splitting what is offered there; some ports. */
function tasksFor(
  random: Random,
  offers: readonly Offer[],
  nextId: () => string,
): { taskId: string; nodeId: string; resources: TaskResources; spec: null }[] {
  const byNode = new Map<string, Amounts>();
  for (const offer of offers)
    byNode.set(offer.nodeId, plus(byNode.get(offer.nodeId) ?? noAmounts, amountsOf(offer.resources)));
  const tasks: { taskId: string; nodeId: string; resources: TaskResources; spec: null }[] = [];
  for (const [nodeId, room] of byNode) {
    const count = random.int(0, 3);
    const ports = room.ports
      .flatMap((range) => [range.begin, range.end])
      .filter((port, i, all) => all.indexOf(port) === i);
    for (let index = 0; index < count; index++) {
      const part = (total: number): number => Math.floor((total * random.next()) / count);
      const gpus = room.devices['gpu'] ?? 0;
      tasks.push({
        taskId: nextId(),
        nodeId,
        resources: {
          cpuMillis: part(room.cpuMillis),
          memoryBytes: part(room.memoryBytes),
          ...(room.diskBytes > 0 ? { diskBytes: part(room.diskBytes) } : {}),
          ...(index === 0 && gpus > 0 ? { devices: { gpu: random.int(0, gpus + 1) } } : {}),
          ...(index === 0 && ports.length > 0
            ? { ports: ports.slice(0, random.int(0, ports.length + 1)) }
            : {}),
        },
        spec: null,
      });
    }
  }
  return tasks;
}

describe('offer rounds against the reference', () => {
  it('make the same offers, rescinds and answers on small random clusters (40 seeds)', () => {
    for (let seed = 1; seed <= 40; seed++)
      run(seed, { nodes: 3 + (seed % 20), frameworks: 1 + (seed % 8), steps: 40 });
  });

  it('make the same offers with many contenders and namespaces tied at zero share', () => {
    for (let seed = 100; seed < 104; seed++) run(seed, { nodes: 120, frameworks: 40, steps: 12 });
  });
});

describe('allocation-free resource checks', () => {
  it('fitsIn and coversRanges agree with shortOf and subtractRanges', () => {
    const random = seededRandom(7);
    const ranges = (): PortRange[] => {
      const out: PortRange[] = [];
      let port = random.int(1, 20);
      for (let index = random.int(0, 4); index > 0; index--) {
        const end = port + random.int(0, 5);
        out.push({ begin: port, end });
        port = end + random.int(2, 6);
      }
      return out;
    };
    const amounts = (): Amounts =>
      amountsOf({
        cpuMillis: random.int(0, 5),
        memoryBytes: random.int(0, 5),
        diskBytes: random.int(0, 3),
        devices: random.next() < 0.5 ? { gpu: random.int(0, 3), fpga: random.int(0, 2) } : {},
        ports: ranges(),
      });
    for (let trial = 0; trial < 5000; trial++) {
      const need = amounts();
      const room = amounts();
      expect(fitsIn(need, room)).toBe(shortOf(need, room) === null);
      expect(coversRanges(room.ports, need.ports)).toBe(subtractRanges(need.ports, room.ports).length === 0);
    }
  });
});
