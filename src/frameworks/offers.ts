/**
 * The leader's volatile half: the offer book. It holds what only the current leader knows and a new leader
 * starts without — subscribed frameworks' sessions (suppressed or not, node filters from DECLINE, REVIVE's
 * minimum shape), outstanding offers, and accepted launches not yet committed — and decides who is offered
 * what. Losing it loses nothing durable: frameworks re-subscribe to the new leader, which offers afresh.
 *
 * In: the cluster's view of nodes and usage (`OfferView`, read per round, never kept), framework calls, and
 * the time as `nowMs`. Out: events (OFFERS, RESCIND, FAILURE) and launches for the shell to propose. It
 * never touches the replicated state, streams, timers or the clock; same calls in the same order, same
 * offers.
 *
 * One round (`offerRound`), in order:
 * 1. Nodes up last round and down or gone now: FAILURE to every subscriber.
 * 2. Offers on nodes that are gone or draining, past their timeout, or beyond the node's free resources
 *    (built-in work took the room): RESCIND.
 * 3. Framework zero reclaims: built-in pending work that fits nowhere, but would fit on a node were the
 *    offers of frameworks it outranks (order.ts) rescinded, has those rescinded, lowest-ordered first.
 * 4. Free room is offered node by node (a rotating start, so no node is always first): on each node, the
 *    first framework in order that is not suppressed, not filtered there, has quota headroom and whose
 *    minimum shape fits gets all the node's room its quota allows; any rest goes on down the order. Before
 *    any framework that built-in pending work fitting there outranks, or that the built-in allocator holds
 *    the node for, the node's turn ends: that room is left for the next allocator plan.
 * An offer counts as its framework's in every share and quota until it is accepted, declined or rescinded.
 */
import { defaultNamespace, type Resources } from '../allocator/index.ts';
import { assert } from '../shared/assert.ts';
import { FrameworkError, type FrameworkErrorCode } from './errors.ts';
import {
  builtInDemandsMax,
  idLengthMax,
  offerCpuMillisMinDefault,
  offerMemoryBytesMinDefault,
  offerTimeoutMsDefault,
  offersPerCallMax,
  offersPerFrameworkMax,
  refuseMsDefault,
  refuseMsMax,
  tasksPerAcceptMax,
} from './limits.ts';
import {
  ContenderOrder,
  ShareLedger,
  compareBuiltIn,
  compareContenders,
  compareIds,
  outranks,
  type BuiltInRank,
  type Contender,
} from './order.ts';
import {
  amountsOf,
  amountsOfTask,
  fitsIn,
  formatAmounts,
  minus,
  noAmounts,
  normalizeRanges,
  plus,
  portCount,
  portMax,
  portMin,
  shortOf,
  toOfferResources,
  withinLimit,
  type Amounts,
  type OfferResources,
  type TaskResources,
} from './resources.ts';
import type {
  AcceptCall,
  AcceptResult,
  BuiltInDemand,
  FrameworkInfo,
  Launch,
  Offer,
  OfferNode,
  OfferView,
  SchedulerEvent,
} from './types.ts';

export interface OfferBookInit {
  /**
   * Tells this leader's offers from any other's: offer ids are `${epoch}-o${n}`, so an id a framework kept
   * from a deposed leader is unknown here rather than someone else's offer. Use the node id and Raft term.
   */
  readonly epoch: string;
  /** An offer unanswered this long is rescinded. Default offerTimeoutMsDefault (30 s). */
  readonly offerTimeoutMs?: number;
  /** A DECLINE or ACCEPT without refuse_seconds filters the node this long. Default refuseMsDefault (5 s). */
  readonly refuseMsDefault?: number;
  /** No offer below this much CPU… Default offerCpuMillisMinDefault (10 millis). */
  readonly offerCpuMillisMin?: number;
  /** …or memory. Default offerMemoryBytesMinDefault (32 MiB). */
  readonly offerMemoryBytesMin?: number;
}

/** A framework as the book needs it: its id, and the order keys from its info. */
export interface Subscriber {
  readonly id: string;
  readonly info: Pick<FrameworkInfo, 'role' | 'priority'>;
}

interface Session extends Contender {
  suppressed: boolean;
  /** REVIVE's minimum shape: only nodes with at least this much room are offered. */
  minimum: Amounts | null;
  /** Node id → its filter from DECLINE or an ACCEPT's unused rest. */
  readonly filters: Map<string, Filter>;
  /** No filter ends before this (Infinity: none), so a round looks for ended filters only from then. */
  filtersEndAtMsLeast: number;
  offerCount: number;
}

/**
 * A refusal of a node until `untilMs`. DECLINE refuses the node whatever it has; an ACCEPT's unused rest
 * refuses only room that fits `within` (Mesos's filter semantics), so the node comes back to the framework
 * as soon as more is free there (a task ended) rather than after the whole refusal.
 */
interface Filter {
  readonly untilMs: number;
  /** Null: the whole node. */
  readonly within: Amounts | null;
}

interface OfferEntry {
  readonly id: string;
  readonly seq: number;
  readonly framework: Contender;
  readonly nodeId: string;
  readonly amounts: Amounts;
  readonly offeredAtMs: number;
  readonly expiresAtMs: number;
}

/** An accepted launch not yet committed: what it takes on each node stays taken until `settle`. */
interface InFlight {
  readonly framework: Contender;
  readonly byNode: ReadonlyMap<string, Amounts>;
}

interface NodeState {
  readonly id: string;
  readonly capacity: Amounts;
  /** Free resources and free offerable ports. */
  readonly free: Amounts;
  readonly up: boolean;
  readonly schedulable: boolean;
}

interface Demand extends BuiltInRank {
  readonly need: Amounts;
  readonly eligible: (nodeId: string) => boolean;
}

export class OfferBook {
  private readonly epoch: string;
  private readonly offerTimeoutMs: number;
  private readonly refuseMsDefault: number;
  private readonly cpuMillisMin: number;
  private readonly memoryBytesMin: number;
  private readonly sessions = new Map<string, Session>();
  private readonly outstanding = new Map<string, OfferEntry>();
  private readonly offerIdsByNode = new Map<string, Set<string>>();
  private readonly inFlight = new Map<number, InFlight>();
  /**
   * Node id → how many unsuppressed sessions refuse it whole (a DECLINE's filter): a node all of them refuse
   * is passed over without walking the order (idle frameworks that decline everything refuse every node).
   */
  private readonly refusedBy = new Map<string, number>();
  /** `inFlight` by node: node id → accept id → what that launch takes there, in accept order. */
  private readonly inFlightByNode = new Map<string, Map<number, Amounts>>();
  /** The last view's node ids in its order, and sorted: views mostly list the same nodes round after round. */
  private nodeIdsSeen: readonly string[] = [];
  private nodeIdsSorted: readonly string[] = [];
  private upNodes = new Set<string>();
  private offerSeq = 0;
  private acceptSeq = 0;
  private rounds = 0;

  constructor(init: OfferBookInit) {
    const setting = (name: string, value: number | undefined, fallback: number, min: number): number => {
      const resolved = value ?? fallback;
      if (!Number.isSafeInteger(resolved) || resolved < min)
        throw new FrameworkError(
          'CONFIG_INVALID',
          `${name} must be a whole number ≥ ${min}, not ${resolved}`,
        );
      return resolved;
    };
    if (init.epoch.length === 0 || init.epoch.length > idLengthMax / 2)
      throw new FrameworkError('CONFIG_INVALID', `the offer epoch is 1–${idLengthMax / 2} characters`);
    this.epoch = init.epoch;
    this.offerTimeoutMs = setting('offerTimeoutMs', init.offerTimeoutMs, offerTimeoutMsDefault, 1);
    this.refuseMsDefault = setting('refuseMsDefault', init.refuseMsDefault, refuseMsDefault, 0);
    this.cpuMillisMin = setting('offerCpuMillisMin', init.offerCpuMillisMin, offerCpuMillisMinDefault, 1);
    this.memoryBytesMin = setting(
      'offerMemoryBytesMin',
      init.offerMemoryBytesMin,
      offerMemoryBytesMinDefault,
      1,
    );
  }

  // ---- sessions ---------------------------------------------------------------------------------------

  /**
   * A subscription committed: the framework is suppressed until it REVIVEs. Re-subscribing (a scheduler's
   * failover) releases its outstanding offers, which its new instance never saw. Returns their ids.
   */
  subscribe(framework: Subscriber): string[] {
    const released = this.unsubscribe(framework.id);
    this.sessions.set(framework.id, {
      id: framework.id,
      role: framework.info.role,
      priority: framework.info.priority,
      suppressed: true,
      minimum: null,
      filters: new Map(),
      filtersEndAtMsLeast: Infinity,
      offerCount: 0,
    });
    return released;
  }

  /** Its stream closed, or it was torn down or expired: its offers return to the pool. Returns their ids. */
  unsubscribe(frameworkId: string): string[] {
    const released = this.offerEntries()
      .filter((offer) => offer.framework.id === frameworkId)
      .map((offer) => {
        this.dropOffer(offer);
        return offer.id;
      });
    const session = this.sessions.get(frameworkId);
    if (session?.suppressed === false) this.countRefusals(session, -1);
    this.sessions.delete(frameworkId);
    return released;
  }

  isSubscribed(frameworkId: string): boolean {
    return this.sessions.has(frameworkId);
  }

  /** SUPPRESS: no new offers until REVIVE. Outstanding offers stay (they time out or are answered). */
  suppress(frameworkId: string): void {
    const session = this.session(frameworkId);
    if (!session.suppressed) this.countRefusals(session, -1);
    session.suppressed = true;
  }

  /**
   * REVIVE: offers resume, every DECLINE filter is cleared, and with `minimum`, only nodes with at least that
   * much room are offered until the next REVIVE.
   */
  revive(frameworkId: string, minimum?: Resources): void {
    const session = this.session(frameworkId);
    let shape: Amounts | null = null;
    if (minimum !== undefined) {
      const problem = resourcesProblem(minimum);
      if (problem !== null) throw new FrameworkError('CALL_INVALID', `revive's minimum: ${problem}`);
      shape = amountsOf(minimum);
    }
    if (!session.suppressed) this.countRefusals(session, -1);
    session.suppressed = false;
    session.filters.clear();
    session.filtersEndAtMsLeast = Infinity;
    session.minimum = shape;
  }

  // ---- answers to offers ------------------------------------------------------------------------------

  /**
   * DECLINE: the offers return to the pool and their nodes are filtered for this framework for `refuseMs`
   * (default refuseMsDefault; at most refuseMsMax). Ids that are not its outstanding offers are ignored, as
   * Mesos does. Returns the ids declined.
   */
  decline(
    frameworkId: string,
    offerIds: readonly string[],
    refuseMs: number | undefined,
    nowMs: number,
  ): string[] {
    assertTime(nowMs);
    const session = this.session(frameworkId);
    if (offerIds.length > offersPerCallMax)
      throw new FrameworkError('TOO_MANY_OFFERS', `a decline names at most ${offersPerCallMax} offers`);
    const refuse = this.refuseOf(refuseMs);
    if (refuse instanceof FrameworkError) throw refuse;
    const declined: string[] = [];
    for (const id of new Set(offerIds)) {
      const offer = this.outstanding.get(id);
      if (offer?.framework.id !== frameworkId) continue;
      this.dropOffer(offer);
      if (refuse > 0) this.filter(session, offer.nodeId, { untilMs: nowMs + refuse, within: null });
      declined.push(id);
    }
    return declined;
  }

  /**
   * ACCEPT, all or nothing. Every offer must be this framework's, outstanding and unexpired; the tasks on each
   * node must fit in the sum of the accepted offers there (ports included); then every named offer is used:
   * the tasks' resources stay taken (in flight) until `settle`, the rest returns to the pool, and for
   * `refuseMs` the framework is not offered that node again while the node's room there is no more than that
   * rest (Mesos's filter). Otherwise nothing launches, the framework's named offers are released, and the
   * result says why. `taken` tells task ids the framework already has (from the registry).
   */
  accept<Spec>(
    call: AcceptCall<Spec>,
    nowMs: number,
    taken?: (taskId: string) => boolean,
  ): AcceptResult<Spec> {
    assertTime(nowMs);
    const session = this.session(call.frameworkId);
    const named = [...new Set(call.offerIds)];
    const refuse = (code: FrameworkErrorCode, message: string): AcceptResult<Spec> => {
      const released: string[] = [];
      for (const id of named) {
        const offer = this.outstanding.get(id);
        if (offer?.framework.id !== call.frameworkId) continue;
        this.dropOffer(offer);
        released.push(id);
      }
      const offersAtFault = code.startsWith('OFFER') || code === 'TOO_MANY_OFFERS' || code === 'CALL_INVALID';
      return {
        ok: false,
        error: new FrameworkError(code, message),
        released,
        taskState: offersAtFault ? 'TASK_DROPPED' : 'TASK_ERROR',
      };
    };
    if (call.offerIds.length === 0) return refuse('CALL_INVALID', 'an accept names at least one offer');
    if (call.offerIds.length > offersPerCallMax)
      return refuse('TOO_MANY_OFFERS', `an accept names at most ${offersPerCallMax} offers`);
    if (named.length !== call.offerIds.length)
      return refuse('OFFER_DUPLICATE', 'an accept names an offer twice');
    if (call.tasks.length > tasksPerAcceptMax)
      return refuse('TOO_MANY_TASKS', `an accept launches at most ${tasksPerAcceptMax} tasks`);
    const refuseMs = this.refuseOf(call.refuseMs);
    if (refuseMs instanceof FrameworkError) return refuse(refuseMs.frameworkCode, refuseMs.message);

    const offered = new Map<string, Amounts>();
    for (const id of named) {
      const offer = this.outstanding.get(id);
      if (!offer)
        return refuse('OFFER_UNKNOWN', `offer ${id} is not outstanding: it was used, declined or rescinded`);
      if (offer.framework.id !== call.frameworkId)
        return refuse('OFFER_NOT_OWNED', `offer ${id} was made to another framework`);
      if (offer.expiresAtMs <= nowMs)
        return refuse('OFFER_EXPIRED', `offer ${id} expired at ${offer.expiresAtMs} ms, before ${nowMs} ms`);
      offered.set(offer.nodeId, plus(offered.get(offer.nodeId) ?? noAmounts, offer.amounts));
    }

    const asked = new Map<string, Amounts>();
    const portOwner = new Map<string, string>();
    const taskIds = new Set<string>();
    for (const task of call.tasks) {
      if (task.taskId.length === 0 || task.taskId.length > idLengthMax)
        return refuse('TASK_INVALID', `task ids are 1–${idLengthMax} characters`);
      if (taskIds.has(task.taskId))
        return refuse('TASK_DUPLICATE', `the accept launches task ${task.taskId} twice`);
      if (taken?.(task.taskId) === true)
        return refuse('TASK_DUPLICATE', `framework ${call.frameworkId} has a task ${task.taskId} already`);
      taskIds.add(task.taskId);
      const problem = taskResourcesProblem(task.resources);
      if (problem !== null) return refuse('TASK_INVALID', `task ${task.taskId}: ${problem}`);
      if (!offered.has(task.nodeId))
        return refuse(
          'TASK_NODE_NOT_OFFERED',
          `task ${task.taskId} names node ${task.nodeId}, where none of the accepted offers is`,
        );
      for (const port of task.resources.ports ?? []) {
        const key = `${task.nodeId}:${port}`;
        const other = portOwner.get(key);
        if (other !== undefined)
          return refuse(
            'PORTS_NOT_OFFERED',
            `tasks ${other} and ${task.taskId} both ask for port ${port} on ${task.nodeId}`,
          );
        portOwner.set(key, task.taskId);
      }
      asked.set(task.nodeId, plus(asked.get(task.nodeId) ?? noAmounts, amountsOfTask(task.resources)));
    }
    for (const [nodeId, need] of [...asked].sort(([a], [b]) => compareIds(a, b))) {
      const room = offered.get(nodeId) ?? noAmounts;
      const short = shortOf(need, room);
      if (short === null) continue;
      if (short.startsWith('port '))
        return refuse(
          'PORTS_NOT_OFFERED',
          `the tasks on node ${nodeId} ask for ${short}, which its offers do not hold`,
        );
      return refuse(
        'TASKS_DO_NOT_FIT',
        `the tasks on node ${nodeId} ask for ${formatAmounts(need)}; its offers hold ${formatAmounts(room)} (short of ${short})`,
      );
    }

    // Accepted: every named offer is used; what the tasks take stays taken until the launch settles.
    for (const id of named) {
      const offer = this.outstanding.get(id);
      assert(offer !== undefined, 'a checked offer is outstanding');
      this.dropOffer(offer);
    }
    const filteredNodeIds: string[] = [];
    for (const [nodeId, room] of [...offered].sort(([a], [b]) => compareIds(a, b))) {
      const rest = minus(room, asked.get(nodeId) ?? noAmounts);
      if (refuseMs > 0 && !isEmpty(rest)) {
        this.filter(session, nodeId, { untilMs: nowMs + refuseMs, within: rest });
        filteredNodeIds.push(nodeId);
      }
    }
    const acceptId = ++this.acceptSeq;
    if (asked.size > 0) {
      this.inFlight.set(acceptId, { framework: contenderOf(session), byNode: asked });
      for (const [nodeId, amounts] of asked) {
        let launches = this.inFlightByNode.get(nodeId);
        if (!launches) this.inFlightByNode.set(nodeId, (launches = new Map<number, Amounts>()));
        launches.set(acceptId, amounts);
      }
    }
    const launches: Launch<Spec>[] = call.tasks.map((task) => ({
      frameworkId: call.frameworkId,
      nodeId: task.nodeId,
      taskId: task.taskId,
      resources: task.resources,
      spec: task.spec,
    }));
    return { ok: true, acceptId, launches, filteredNodeIds };
  }

  /**
   * The launch command of accept `acceptId` committed (the view now counts its tasks) or failed: what it took
   * is no longer held here. False when there was nothing to settle (settled already, or it launched nothing).
   */
  settle(acceptId: number): boolean {
    const launch = this.inFlight.get(acceptId);
    if (!launch) return false;
    this.inFlight.delete(acceptId);
    for (const nodeId of launch.byNode.keys()) {
      const launches = this.inFlightByNode.get(nodeId);
      assert(launches?.delete(acceptId) === true, 'an in-flight launch is indexed on its nodes');
      if (launches.size === 0) this.inFlightByNode.delete(nodeId);
    }
    return true;
  }

  // ---- rounds -----------------------------------------------------------------------------------------

  /** One offer round at `nowMs` (see the header); the events to send, RESCIND and FAILURE before OFFERS. */
  /**
   * True when a round would do nothing (no framework subscribed, no offer outstanding), so the leader
   * need not build the view of every node and task for it. The node list is forgotten then, so a framework
   * that subscribes later hears of no failure from before it came.
   */
  idle(): boolean {
    if (this.sessions.size > 0 || this.outstanding.size > 0) return false;
    this.upNodes = new Set();
    return true;
  }

  offerRound(view: OfferView, nowMs: number): SchedulerEvent[] {
    assertTime(nowMs);
    const nodes = indexNodes(view.nodes);
    const events: SchedulerEvent[] = [];

    const failed: string[] = [];
    for (const nodeId of this.upNodes) if (nodes.get(nodeId)?.up !== true) failed.push(nodeId);
    if (failed.length > 0) {
      const sessions = [...this.sessions.values()].sort((a, b) => compareIds(a.id, b.id));
      for (const nodeId of failed.sort(compareIds))
        for (const session of sessions) events.push({ type: 'FAILURE', frameworkId: session.id, nodeId });
    }
    this.upNodes = new Set();
    for (const node of nodes.values()) if (node.up) this.upNodes.add(node.id);

    for (const offer of this.offerEntries()) {
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
    for (const nodeId of [...this.offerIdsByNode.keys()].sort(compareIds)) {
      const node = nodes.get(nodeId);
      assert(node !== undefined, 'offers left stand on known nodes');
      const newestFirst = this.offersOn(nodeId).sort((a, b) => b.seq - a.seq);
      for (const offer of newestFirst) {
        if (fitsIn(this.heldAmounts(nodeId), node.free)) break;
        this.rescind(offer, 'its node has less free than was offered', events);
      }
    }
    for (const session of this.sessions.values()) {
      if (session.filtersEndAtMsLeast > nowMs) continue;
      session.filtersEndAtMsLeast = Infinity;
      for (const [nodeId, filter] of session.filters)
        if (filter.untilMs <= nowMs) {
          session.filters.delete(nodeId);
          if (filter.within === null && !session.suppressed) this.countRefusal(nodeId, -1);
        } else session.filtersEndAtMsLeast = Math.min(session.filtersEndAtMsLeast, filter.untilMs);
    }

    const ledger = this.ledgerOf(view, nodes);
    const demands = (view.builtIn ?? [])
      .map((demand) => demandOf(demand))
      .sort((a, b) => compareBuiltIn(ledger, a, b))
      .slice(0, builtInDemandsMax);
    const builtInUsage = view.namespaceUsage ?? new Map<string, Resources>();
    const placeable = demands.filter((demand) => {
      const used = amountsOf(builtInUsage.get(demand.namespace ?? defaultNamespace) ?? noResources);
      const quota = ledger.policy(demand.namespace ?? defaultNamespace)?.quota;
      return fitsIn(demand.need, withinLimit(demand.need, quota, used));
    });
    this.reclaim(placeable, nodes, ledger, events);
    this.offerRoom(view, placeable, nodes, ledger, nowMs, events);
    this.rounds++;
    return events;
  }

  // ---- reading ----------------------------------------------------------------------------------------

  /** Outstanding offers, oldest first. */
  offers(): Offer[] {
    return this.offerEntries().map(publicOffer);
  }

  /**
   * What offers and in-flight launches hold on a node. The shell subtracts it from the node's free resources
   * (and ports) in the built-in allocator's view, so built-in work never lands on offered room; the book
   * rescinds offers that built-in work outranking them needs (round step 3).
   */
  heldOn(nodeId: string): OfferResources {
    return toOfferResources(this.heldAmounts(nodeId));
  }

  /**
   * What must hold after every round, as one-line violations (empty: all well): every offer's framework is
   * subscribed and its node up and schedulable; on every node, offers and in-flight launches together fit in
   * its free resources and no port is offered twice; no framework holds more than offersPerFrameworkMax; the
   * book's indexes (launches in flight by node, whole-node refusals by node) agree with what they index.
   */
  checkInvariants(view: OfferView): string[] {
    const nodes = indexNodes(view.nodes);
    const problems: string[] = [];
    const counts = new Map<string, number>();
    for (const offer of this.outstanding.values()) {
      counts.set(offer.framework.id, (counts.get(offer.framework.id) ?? 0) + 1);
      if (!this.sessions.has(offer.framework.id))
        problems.push(`offer ${offer.id} is held by ${offer.framework.id}, which is not subscribed`);
      const node = nodes.get(offer.nodeId);
      if (node?.up !== true || !node.schedulable)
        problems.push(`offer ${offer.id} stands on ${offer.nodeId}, which is not up and schedulable`);
    }
    for (const [frameworkId, count] of counts)
      if (count > offersPerFrameworkMax || count !== this.sessions.get(frameworkId)?.offerCount)
        problems.push(`framework ${frameworkId} holds ${count} offers, its session counts otherwise`);
    for (const node of nodes.values()) {
      const held = this.heldAmounts(node.id);
      const short = shortOf(held, node.free);
      if (short !== null)
        problems.push(
          `node ${node.id}: offers and launches hold ${formatAmounts(held)}, more ${short} than its free ${formatAmounts(node.free)}`,
        );
      // Ranges merge when added: a port held twice shows as fewer ports in the sum than in the parts.
      let ports = portCount(this.inFlightOn(node.id).ports);
      for (const offer of this.offersOn(node.id)) ports += portCount(offer.amounts.ports);
      if (ports !== portCount(held.ports)) problems.push(`node ${node.id}: a port is held twice`);
    }
    let indexed = 0;
    for (const launches of this.inFlightByNode.values()) indexed += launches.size;
    for (const [acceptId, launch] of this.inFlight)
      for (const [nodeId, amounts] of launch.byNode) {
        indexed--;
        if (this.inFlightByNode.get(nodeId)?.get(acceptId) !== amounts)
          problems.push(`accept ${acceptId}: its launch on ${nodeId} is not indexed`);
      }
    if (indexed !== 0) problems.push(`${indexed} launches in flight indexed that are not in flight`);
    const refusals = new Map<string, number>();
    for (const session of this.sessions.values())
      if (!session.suppressed)
        for (const [nodeId, filter] of session.filters)
          if (filter.within === null) refusals.set(nodeId, (refusals.get(nodeId) ?? 0) + 1);
    for (const nodeId of new Set([...refusals.keys(), ...this.refusedBy.keys()]))
      if (refusals.get(nodeId) !== this.refusedBy.get(nodeId))
        problems.push(
          `node ${nodeId}: ${refusals.get(nodeId) ?? 0} sessions refuse it, ${this.refusedBy.get(nodeId) ?? 0} counted`,
        );
    return problems;
  }

  // ---- inside -----------------------------------------------------------------------------------------

  private session(frameworkId: string): Session {
    const session = this.sessions.get(frameworkId);
    if (!session)
      throw new FrameworkError(
        'NOT_SUBSCRIBED',
        `framework ${frameworkId} has no subscription on this leader`,
      );
    return session;
  }

  private refuseOf(refuseMs: number | undefined): number | FrameworkError {
    if (refuseMs === undefined) return this.refuseMsDefault;
    if (!Number.isFinite(refuseMs) || refuseMs < 0)
      return new FrameworkError(
        'CALL_INVALID',
        `refuse_seconds must be a number ≥ 0, not ${refuseMs / 1000}`,
      );
    return Math.min(Math.ceil(refuseMs), refuseMsMax);
  }

  /** Adds a filter; with one in place already, a whole-node refusal wins, else the newer rest. */
  private filter(session: Session, nodeId: string, filter: Filter): void {
    session.filtersEndAtMsLeast = Math.min(session.filtersEndAtMsLeast, filter.untilMs);
    const old = session.filters.get(nodeId);
    if (old === undefined || (old.within !== null && filter.within !== null))
      session.filters.set(nodeId, filter);
    else
      session.filters.set(nodeId, {
        untilMs: Math.max(old.untilMs, filter.untilMs),
        within: old.within === null || filter.within === null ? null : filter.within,
      });
    if (!session.suppressed && old?.within !== null && filter.within === null) this.countRefusal(nodeId, 1);
  }

  /** Counts (1) or stops counting (-1) a whole-node refusal by an unsuppressed session. */
  private countRefusal(nodeId: string, change: 1 | -1): void {
    const count = (this.refusedBy.get(nodeId) ?? 0) + change;
    assert(count >= 0, 'refusals counted are refusals held');
    if (count === 0) this.refusedBy.delete(nodeId);
    else this.refusedBy.set(nodeId, count);
  }

  /** The session starts (1) or stops (-1) contending: its whole-node refusals count, or no longer. */
  private countRefusals(session: Session, change: 1 | -1): void {
    for (const [nodeId, filter] of session.filters)
      if (filter.within === null) this.countRefusal(nodeId, change);
  }

  private offerEntries(): OfferEntry[] {
    return [...this.outstanding.values()].sort((a, b) => a.seq - b.seq);
  }

  private offersOn(nodeId: string): OfferEntry[] {
    const offers: OfferEntry[] = [];
    for (const id of this.offerIdsByNode.get(nodeId) ?? []) {
      const offer = this.outstanding.get(id);
      if (offer) offers.push(offer);
    }
    return offers;
  }

  private inFlightOn(nodeId: string): Amounts {
    let held = noAmounts;
    for (const amounts of this.inFlightByNode.get(nodeId)?.values() ?? []) held = plus(held, amounts);
    return held;
  }

  /** What offers and launches in flight hold on the node: `noAmounts` itself when nothing. */
  private heldAmounts(nodeId: string): Amounts {
    let held = this.inFlightOn(nodeId);
    for (const id of this.offerIdsByNode.get(nodeId) ?? []) {
      const offer = this.outstanding.get(id);
      if (offer) held = plus(held, offer.amounts);
    }
    return held;
  }

  /** The node's free room less what is held there; its `free` itself when nothing is held (most nodes). */
  private roomOn(node: NodeState): Amounts {
    const held = this.heldAmounts(node.id);
    return held === noAmounts ? node.free : minus(node.free, held);
  }

  /** The view's node ids sorted, reusing the last round's sort when the view lists the same ids. */
  private sortedNodeIds(view: OfferView): readonly string[] {
    const seen = this.nodeIdsSeen;
    let same = seen.length === view.nodes.length;
    for (let index = 0; same && index < seen.length; index++) same = seen[index] === view.nodes[index]?.id;
    if (!same) {
      this.nodeIdsSeen = view.nodes.map((node) => node.id);
      this.nodeIdsSorted = [...this.nodeIdsSeen].sort(compareIds);
    }
    return this.nodeIdsSorted;
  }

  private dropOffer(offer: OfferEntry): void {
    assert(this.outstanding.delete(offer.id), 'a dropped offer was outstanding');
    const ids = this.offerIdsByNode.get(offer.nodeId);
    ids?.delete(offer.id);
    if (ids?.size === 0) this.offerIdsByNode.delete(offer.nodeId);
    const session = this.sessions.get(offer.framework.id);
    if (session) session.offerCount--;
  }

  private rescind(offer: OfferEntry, reason: string, events: SchedulerEvent[], ledger?: ShareLedger): void {
    this.dropOffer(offer);
    ledger?.add(offer.framework.role, offer.framework.id, offer.amounts, -1);
    events.push({ type: 'RESCIND', frameworkId: offer.framework.id, offerId: offer.id, reason });
  }

  private ledgerOf(view: OfferView, nodes: ReadonlyMap<string, NodeState>): ShareLedger {
    const capacity = { cpuMillis: 0, memoryBytes: 0, diskBytes: 0, devices: {} as Record<string, number> };
    for (const node of nodes.values()) {
      if (!node.up) continue;
      capacity.cpuMillis += node.capacity.cpuMillis;
      capacity.memoryBytes += node.capacity.memoryBytes;
      capacity.diskBytes += node.capacity.diskBytes;
      for (const kind in node.capacity.devices)
        capacity.devices[kind] = (capacity.devices[kind] ?? 0) + (node.capacity.devices[kind] ?? 0);
    }
    const ledger = new ShareLedger(
      capacity,
      view.namespaces ?? [],
      view.namespaceUsage ?? new Map(),
      view.frameworkUsage ?? new Map(),
    );
    for (const offer of this.outstanding.values())
      ledger.add(offer.framework.role, offer.framework.id, offer.amounts, 1);
    for (const launch of this.inFlight.values())
      for (const amounts of launch.byNode.values())
        ledger.add(launch.framework.role, launch.framework.id, amounts, 1);
    return ledger;
  }

  /** Round step 3: offers rescinded for built-in work that fits nowhere else. */
  private reclaim(
    demands: readonly Demand[],
    nodes: ReadonlyMap<string, NodeState>,
    ledger: ShareLedger,
    events: SchedulerEvent[],
  ): void {
    const candidates = [...nodes.values()]
      .filter((node) => node.up && node.schedulable)
      .sort((a, b) => compareIds(a.id, b.id));
    for (const demand of demands) {
      if (this.outstanding.size === 0) return;
      if (candidates.some((node) => demand.eligible(node.id) && fitsIn(demand.need, this.roomOn(node))))
        continue;
      for (const node of candidates) {
        if (!demand.eligible(node.id)) continue;
        const reclaimable = this.offersOn(node.id).filter((offer) =>
          outranks(ledger, demand, offer.framework),
        );
        if (reclaimable.length === 0) continue;
        let kept = this.inFlightOn(node.id);
        for (const offer of this.offersOn(node.id))
          if (!reclaimable.includes(offer)) kept = plus(kept, offer.amounts);
        if (!fitsIn(demand.need, minus(node.free, kept))) continue;
        // Lowest-ordered framework first, then its newest offer.
        reclaimable.sort((a, b) => compareContenders(ledger, b.framework, a.framework) || b.seq - a.seq);
        for (const offer of reclaimable) {
          if (fitsIn(demand.need, this.roomOn(node))) break;
          this.rescind(offer, 'reclaimed for built-in work that goes first', events, ledger);
        }
        break;
      }
    }
  }

  /**
   * Round step 4: free room offered node by node. The contenders' order is kept across nodes and re-placed
   * only for those offered on a node, once the node's turn ends (a turn walks the order as it stood when the
   * turn began). Nodes every contender refuses, or where no contender's minimum fits, are passed over without
   * walking the order. bench:offers at 5,000 nodes × 200 frameworks: a round took 154 ms on average when
   * every node re-sorted every contender with shares recomputed; this way about 9 ms, and the same offers
   * (offers.reference.test.ts).
   */
  private offerRoom(
    view: OfferView,
    demands: readonly Demand[],
    nodes: ReadonlyMap<string, NodeState>,
    ledger: ShareLedger,
    nowMs: number,
    events: SchedulerEvent[],
  ): void {
    const contenders = [...this.sessions.values()].filter((session) => !session.suppressed);
    if (contenders.length === 0) return;
    const holds = new Map<string, BuiltInRank[]>();
    for (const hold of view.holds ?? []) {
      const onNode = holds.get(hold.nodeId);
      if (onNode) onNode.push(hold);
      else holds.set(hold.nodeId, [hold]);
    }
    // The least CPU and memory any contender's minimum asks: room with less is offered to none of them.
    let cpuMillisLeast = this.cpuMillisMin;
    let memoryBytesLeast = this.memoryBytesMin;
    if (contenders.every((session) => session.minimum !== null)) {
      cpuMillisLeast = Math.max(
        cpuMillisLeast,
        Math.min(...contenders.map((s) => s.minimum?.cpuMillis ?? 0)),
      );
      memoryBytesLeast = Math.max(
        memoryBytesLeast,
        Math.min(...contenders.map((s) => s.minimum?.memoryBytes ?? 0)),
      );
    }
    const order = new ContenderOrder(ledger, contenders);
    const ids = this.sortedNodeIds(view);
    const start = ids.length === 0 ? 0 : this.rounds % ids.length;
    const made = new Map<string, Offer[]>();
    const blockers: BuiltInRank[] = [];
    const offeredHere: Session[] = [];
    for (let step = 0; step < ids.length; step++) {
      const nodeId = ids[(start + step) % ids.length];
      const node = nodeId === undefined ? undefined : nodes.get(nodeId);
      assert(node !== undefined, 'an indexed node');
      if (!node.up || !node.schedulable) continue;
      // Every contender refuses the node (filters past their time were dropped at the round's start).
      if (this.refusedBy.get(node.id) === contenders.length) continue;
      let room = this.roomOn(node);
      if (room.cpuMillis < cpuMillisLeast || room.memoryBytes < memoryBytesLeast) continue;
      blockers.length = 0;
      for (const hold of holds.get(node.id) ?? []) blockers.push(hold);
      for (const demand of demands)
        if (demand.eligible(node.id) && fitsIn(demand.need, room)) blockers.push(demand);
      offeredHere.length = 0;
      order.walk();
      for (let session = order.next(); session !== undefined; session = order.next()) {
        // The order is monotone: work that outranks one framework outranks every later one.
        if (outranksAny(ledger, blockers, session)) break;
        if (session.offerCount >= offersPerFrameworkMax) continue;
        const quota = ledger.policy(session.role)?.quota;
        const amounts =
          quota === undefined ? room : withinLimit(room, quota, ledger.namespaceHeld(session.role));
        if (this.tooSmall(amounts)) continue;
        if (session.minimum !== null && !fitsIn(session.minimum, amounts)) continue;
        const filter = session.filters.get(node.id);
        if (filter && filter.untilMs > nowMs && (filter.within === null || fitsIn(amounts, filter.within)))
          continue;
        const offer = this.makeOffer(session, node.id, amounts, nowMs);
        ledger.add(session.role, session.id, amounts, 1);
        offeredHere.push(session);
        const offers = made.get(session.id);
        if (offers) offers.push(publicOffer(offer));
        else made.set(session.id, [publicOffer(offer)]);
        room = minus(room, amounts);
        if (this.tooSmall(room)) break;
      }
      for (const session of offeredHere) order.update(session);
    }
    for (const [frameworkId, offers] of [...made].sort(([a], [b]) => compareIds(a, b)))
      events.push({ type: 'OFFERS', frameworkId, offers });
  }

  private makeOffer(session: Session, nodeId: string, amounts: Amounts, nowMs: number): OfferEntry {
    const seq = ++this.offerSeq;
    const offer: OfferEntry = {
      id: `${this.epoch}-o${seq}`,
      seq,
      framework: contenderOf(session),
      nodeId,
      amounts,
      offeredAtMs: nowMs,
      expiresAtMs: nowMs + this.offerTimeoutMs,
    };
    this.outstanding.set(offer.id, offer);
    let ids = this.offerIdsByNode.get(nodeId);
    if (!ids) this.offerIdsByNode.set(nodeId, (ids = new Set()));
    ids.add(offer.id);
    session.offerCount++;
    return offer;
  }

  private tooSmall(amounts: Amounts): boolean {
    return amounts.cpuMillis < this.cpuMillisMin || amounts.memoryBytes < this.memoryBytesMin;
  }
}

const noResources: Resources = { cpuMillis: 0, memoryBytes: 0 };

/** Some of the built-in work goes before the framework (`outranks`). */
function outranksAny(ledger: ShareLedger, work: readonly BuiltInRank[], framework: Contender): boolean {
  for (const rank of work) if (outranks(ledger, rank, framework)) return true;
  return false;
}

function contenderOf(session: Session): Contender {
  return { id: session.id, role: session.role, priority: session.priority };
}

function publicOffer(offer: OfferEntry): Offer {
  return {
    id: offer.id,
    frameworkId: offer.framework.id,
    nodeId: offer.nodeId,
    resources: toOfferResources(offer.amounts),
    offeredAtMs: offer.offeredAtMs,
    expiresAtMs: offer.expiresAtMs,
  };
}

function demandOf(demand: BuiltInDemand): Demand {
  assert(resourcesProblem(demand.request) === null, 'built-in requests are whole, non-negative amounts');
  return {
    priority: demand.priority,
    namespace: demand.namespace ?? defaultNamespace,
    need: amountsOf(demand.request),
    eligible: demand.eligible ?? (() => true),
  };
}

/** The view's nodes by id, asserted well formed: the view comes from the replicated state, not a user. */
function indexNodes(nodes: readonly OfferNode[]): Map<string, NodeState> {
  const index = new Map<string, NodeState>();
  for (const node of nodes) {
    assert(!index.has(node.id), `node ${node.id} is listed once`);
    assert(resourcesProblem(node.capacity) === null, 'node capacities are whole, non-negative amounts');
    index.set(node.id, {
      id: node.id,
      capacity: amountsOf(node.capacity),
      free: freeAmountsOf(node),
      up: node.up,
      schedulable: node.schedulable,
    });
  }
  return index;
}

/**
 * The node's free resources and offerable ports as amounts. A node may report more in use than it has (a
 * task started before its capacity shrank): none free, never less than none.
 */
function freeAmountsOf(node: OfferNode): Amounts {
  const devices: Record<string, number> = {};
  if (node.free.devices)
    for (const [kind, count] of Object.entries(node.free.devices)) if (count > 0) devices[kind] = count;
  return {
    cpuMillis: Math.max(0, node.free.cpuMillis),
    memoryBytes: Math.max(0, node.free.memoryBytes),
    diskBytes: Math.max(0, node.free.diskBytes ?? 0),
    devices,
    ports: normalizeRanges(node.ports ?? []),
  };
}

/** Why resources are not whole, non-negative amounts, or null. */
function resourcesProblem(resources: Resources): string | null {
  const whole = (value: number | undefined): boolean =>
    value === undefined || (Number.isSafeInteger(value) && value >= 0);
  if (!whole(resources.cpuMillis) || !whole(resources.memoryBytes) || !whole(resources.diskBytes))
    return 'CPU, memory and disk are whole numbers ≥ 0';
  for (const [kind, count] of Object.entries(resources.devices ?? {}))
    if (kind.length === 0 || !whole(count)) return `device counts are whole numbers ≥ 0 (${kind})`;
  return null;
}

function taskResourcesProblem(resources: TaskResources): string | null {
  const problem = resourcesProblem(resources);
  if (problem !== null) return problem;
  const ports = resources.ports ?? [];
  for (const port of ports)
    if (!Number.isInteger(port) || port < portMin || port > portMax)
      return `ports are ${portMin}–${portMax}, not ${port}`;
  if (new Set(ports).size !== ports.length) return 'a task names a port twice';
  return null;
}

function isEmpty(amounts: Amounts): boolean {
  return (
    amounts.cpuMillis === 0 &&
    amounts.memoryBytes === 0 &&
    amounts.diskBytes === 0 &&
    Object.keys(amounts.devices).length === 0 &&
    amounts.ports.length === 0
  );
}

function assertTime(nowMs: number): void {
  assert(Number.isSafeInteger(nowMs) && nowMs >= 0, 'times are whole ms ≥ 0');
}
