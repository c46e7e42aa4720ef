/**
 * Frameworks on a node: the scheduler API's streams and calls (`POST /v1/scheduler`), and, while this node
 * is the ready leader, the offer book, the redelivery of status updates and the offer rounds. The decisions
 * are src/frameworks' (pure); this file holds the streams, timers and proposals.
 *
 * Any node accepts the API: a follower relays a subscription to the leader over `/shoal/scheduler/1.0.0`
 * (the leader's events come back on that libp2p stream, which the follower copies to its HTTP answer) and
 * forwards calls over `/shoal/scheduler-call/1.0.0`. When the leader changes, its streams end (an ERROR line
 * when it steps down, a dropped connection when it dies) and the framework subscribes again with its id;
 * the new leader's book starts empty, so no offer of the old leader can be used.
 *
 * Durable: what the log holds (src/frameworks/registry.ts through the cluster state). Volatile, leader only:
 * offers, filters, suppression and redelivery timers (a new subscription starts suppressed until REVIVE).
 */
import type { Libp2p, PeerId, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { randomBytes } from 'node:crypto';
import { compileConstraints, matchesAll, type Resources } from '../allocator/index.ts';
import {
  dynamicPortRangeDefault,
  isTerminal,
  newTaskId,
  taskConstraints,
  toNamespacePolicy,
  type ApplyResult,
  type ClusterState,
  type Command,
  type Hold,
  type TaskSpec,
} from '../cluster/index.ts';
import {
  builtInDemandsMax,
  decideCall,
  heartbeatIntervalMsDefault,
  isFrameworkError,
  newFrameworkId,
  normalizeRanges,
  OfferBook,
  resolveFrameworkInfo,
  subtractRanges,
  UpdateDelivery,
  type BuiltInDemand,
  type OfferNode,
  type OfferView,
  type PortRange,
  type SchedulerEvent,
} from '../frameworks/index.ts';
import {
  decodeSchedulerCall,
  encodeSchedulerEvent,
  type DecodedCall,
  type SchedulerEventJson,
} from '../api/index.ts';
import {
  ShoalError,
  Semaphore,
  callRpc,
  errorMessage,
  handleRpc,
  isShoalError,
  type Logger,
} from '../shared/index.ts';
import type { Random } from '../shared/random.ts';
import { jsonStream } from '../shared/wire.ts';

export const schedulerProtocol = '/shoal/scheduler/1.0.0';
export const schedulerCallProtocol = '/shoal/scheduler-call/1.0.0';
/** Offer rounds run at most this often (and on the leader's tick): a freed node is offered within it. */
export const offerRoundIntervalMs = 100;
/** Scheduler streams one node holds at once (its own and relayed ones). */
export const schedulerStreamsMax = 256;
/**
 * Events queued for a stream whose reader does not keep up; one more ends the stream with an ERROR (the
 * framework subscribes again and reconciles). Offers and updates are not lost: they are offered again and
 * redelivered.
 */
export const streamQueueMax = 10_000;
/** Calls one follower forwards to the leader at once; more wait their turn (libp2p bounds streams per protocol). */
export const forwardedCallsMax = 32;
/** How long a follower waits for the leader to take a relayed subscription. */
const relayDialTimeoutMs = 5_000;
/** How long a forwarded call may take (a launch waits for its commit). */
const callTimeoutMs = 15_000;

/** Who may act in which namespaces: null, all of them (the local socket, admin tokens). */
export type NamespaceGrant = readonly string[] | null;

export interface FrameworkServiceInit {
  readonly selfId: string;
  readonly state: ClusterState;
  readonly libp2p: Libp2p;
  readonly logger: Logger;
  readonly random: Random;
  /** Commits a command through the leader and returns how the state took it. */
  readonly propose: (command: Command) => Promise<ApplyResult>;
  /** This node is Raft's ready leader now. */
  readonly isLeader: () => boolean;
  /** The leader's id as this node knows it, or null. */
  readonly leaderId: () => string | null;
  readonly nameOf: (nodeId: string) => string;
  /** Membership believes the node alive. */
  readonly isAlive: (nodeId: string) => boolean;
  readonly nowMs?: () => number;
}

/** What a subscription gives the API: its stream id, and the events to write, until they end. */
export interface Subscription {
  readonly streamId: string;
  readonly events: AsyncIterable<SchedulerEventJson>;
}

/** One framework's event stream on the leader: a bounded queue its reader drains. */
class EventStream implements AsyncIterable<SchedulerEventJson> {
  readonly id: string;
  readonly frameworkId: string;
  private readonly queue: SchedulerEventJson[] = [];
  private wake: (() => void) | null = null;
  private ended = false;
  private closed = false;
  heartbeat: NodeJS.Timeout | null = null;
  /** Called once, when the reader goes away or the stream ends. */
  onClose: (() => void) | null = null;

  constructor(id: string, frameworkId: string) {
    this.id = id;
    this.frameworkId = frameworkId;
  }

  get open(): boolean {
    return !this.ended;
  }

  push(event: SchedulerEventJson): void {
    if (this.ended) return;
    if (this.queue.length >= streamQueueMax) {
      this.queue.push({
        type: 'ERROR',
        error: { message: 'the stream fell too far behind: subscribe again' },
      });
      this.end();
      return;
    }
    this.queue.push(event);
    this.wake?.();
  }

  /** No more events: the reader gets what is queued, then the end. */
  end(): void {
    this.ended = true;
    this.wake?.();
    this.close();
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    this.heartbeat = null;
    this.onClose?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<SchedulerEventJson, void, undefined> {
    try {
      for (;;) {
        const next = this.queue.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        if (this.ended) return;
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = null;
      }
    } finally {
      // The reader went away (or read the end).
      this.ended = true;
      this.close();
    }
  }
}

/** The leader's volatile part, for one term. */
interface Leading {
  readonly term: string;
  readonly book: OfferBook;
  readonly delivery: UpdateDelivery;
  lastRoundMs: number;
  roundTimer: NodeJS.Timeout | null;
  /** Frameworks whose expiry is being proposed. */
  readonly expiring: Set<string>;
}

export class FrameworkService {
  private readonly init: FrameworkServiceInit;
  private leading: Leading | null = null;
  /** Streams this node holds as the leader, by stream id. */
  private readonly streams = new Map<string, EventStream>();
  /** Relayed streams this node holds for frameworks connected to it (follower side). */
  private relayed = 0;
  /** Calls this follower forwards to the leader at once, at most. */
  private readonly forwarding = new Semaphore(forwardedCallsMax);
  /** Launches proposed and not yet applied: the accept to settle, by the launch's first cluster task id. */
  private readonly accepts = new Map<string, { acceptId: number; frameworkId: string; taskIds: string[] }>();

  constructor(init: FrameworkServiceInit) {
    this.init = init;
  }

  private now(): number {
    return (this.init.nowMs ?? Date.now)();
  }

  /** Serves relayed subscriptions and forwarded calls from other nodes. */
  async start(): Promise<void> {
    const { libp2p } = this.init;
    await libp2p.handle(schedulerProtocol, (stream) => this.serveRelay(stream), {
      maxInboundStreams: schedulerStreamsMax,
      runOnLimitedConnection: false,
    });
    await handleRpc(libp2p, schedulerCallProtocol, async (request) => {
      const { streamId, call, namespaces } = parseForwardedCall(request);
      const decoded = decodeSchedulerCall(call);
      if (decoded.type === 'SUBSCRIBE') throw new ShoalError('INVALID_ARGUMENT', 'SUBSCRIBE opens a stream');
      await this.callHere(streamId, decoded, namespaces);
      return {};
    });
  }

  stop(): void {
    this.stepDown('the node is stopping');
  }

  // ---- the API, on any node --------------------------------------------------------------------------

  /** SUBSCRIBE: here on the leader, else relayed to it. */
  async subscribe(body: unknown, namespaces: NamespaceGrant, signal: AbortSignal): Promise<Subscription> {
    const call = decodeSchedulerCall(body);
    if (call.type !== 'SUBSCRIBE')
      throw new ShoalError(
        'INVALID_ARGUMENT',
        `a ${call.type} call needs the shoal-stream-id header of its SUBSCRIBE's answer`,
      );
    if (this.init.isLeader()) return this.subscribeHere(call, namespaces, signal);
    return this.relaySubscription(body, namespaces, signal);
  }

  /** Any call but SUBSCRIBE, on its stream: here on the leader, else forwarded to it. */
  async call(streamId: string, body: unknown, namespaces: NamespaceGrant): Promise<void> {
    const call = decodeSchedulerCall(body);
    if (call.type === 'SUBSCRIBE')
      throw new ShoalError(
        'INVALID_ARGUMENT',
        'SUBSCRIBE takes no shoal-stream-id header: it opens a stream',
      );
    if (this.init.isLeader()) return this.callHere(streamId, call, namespaces);
    const leader = this.leaderPeer();
    // A bounded number in flight to the leader (libp2p allows so many streams per protocol); the rest wait.
    await this.forwarding.run(async () => {
      try {
        await callRpc(
          this.init.libp2p,
          leader,
          schedulerCallProtocol,
          { streamId, call: body, namespaces },
          callTimeoutMs,
        );
      } catch (error) {
        // Sent, and then the leader went away: it may have carried the call out (an ACCEPT's launch may have
        // committed). Say so, so the framework reconciles rather than doing it again.
        if (isShoalError(error, 'UNAVAILABLE') && !error.message.startsWith('cannot reach'))
          throw new ShoalError(
            'TIMEOUT',
            `the leader went away while taking the ${call.type}; whether it was carried out is unknown: reconcile (${errorMessage(error)})`,
          );
        throw error;
      }
    });
  }

  // ---- the leader's side -----------------------------------------------------------------------------

  /** `signal`: the framework went away (its connection closed); the stream ends, its failover clock starts. */
  private async subscribeHere(
    call: Extract<DecodedCall, { type: 'SUBSCRIBE' }>,
    namespaces: NamespaceGrant,
    signal: AbortSignal,
  ): Promise<Subscription> {
    const leading = this.leading;
    if (leading === null)
      throw new ShoalError('UNAVAILABLE', 'this node is becoming the leader: subscribe again');
    if (this.streams.size >= schedulerStreamsMax)
      throw new ShoalError(
        'UNAVAILABLE',
        `this leader holds ${schedulerStreamsMax} scheduler streams: try later`,
      );
    const info = resolveFrameworkInfo(call.info);
    checkNamespace(namespaces, info.role);
    const { state } = this.init;
    if (call.frameworkId !== null && !state.frameworks.has(call.frameworkId))
      throw new ShoalError(
        'NOT_FOUND',
        `no framework ${call.frameworkId}: it was torn down or its failover timeout passed; subscribe without an id`,
      );
    const frameworkId = call.frameworkId ?? newFrameworkId(this.init.random);
    const stream = new EventStream(randomBytes(12).toString('hex'), frameworkId);
    this.streams.set(stream.id, stream);
    const result = await this.init
      .propose({
        type: 'subscribeFramework',
        frameworkId,
        resubscribe: call.frameworkId !== null,
        streamId: stream.id,
        info,
        atMs: this.now(),
      })
      .catch((error: unknown) => {
        this.streams.delete(stream.id);
        throw error;
      });
    const summary = state.frameworks.get(frameworkId);
    if (!result.ok || summary === undefined || this.leading !== leading || summary.streamId !== stream.id) {
      this.streams.delete(stream.id);
      if (!result.ok) throw new ShoalError(result.code, result.message);
      throw new ShoalError('UNAVAILABLE', 'the leader changed while subscribing: subscribe again');
    }
    stream.onClose = () => this.streamClosed(stream);
    for (const offerId of leading.book.subscribe({ id: frameworkId, info: summary.info }))
      this.init.logger.debug('offer rescinded on subscribe', { framework: frameworkId, offer: offerId });
    leading.delivery.reset(frameworkId);
    stream.push({
      type: 'SUBSCRIBED',
      subscribed: {
        framework_id: { value: frameworkId },
        heartbeat_interval_seconds: heartbeatIntervalMsDefault / 1000,
      },
    });
    stream.heartbeat = setInterval(() => stream.push({ type: 'HEARTBEAT' }), heartbeatIntervalMsDefault);
    // Last: a framework already gone ends the stream at once, which unsubscribes it from the book again.
    if (signal.aborted) stream.end();
    else signal.addEventListener('abort', () => stream.end(), { once: true });
    this.init.logger.info('framework subscribed', {
      framework: frameworkId,
      name: info.name,
      role: info.role,
      again: call.frameworkId !== null,
    });
    // Updates it has not acknowledged go out at once.
    this.round(true);
    return { streamId: stream.id, events: stream };
  }

  /** The reader of a stream went away: its offers go, and its failover clock starts. */
  private streamClosed(stream: EventStream): void {
    this.streams.delete(stream.id);
    const leading = this.leading;
    if (leading === null) return;
    if (this.init.state.frameworks.get(stream.frameworkId)?.streamId !== stream.id) return;
    leading.book.unsubscribe(stream.frameworkId);
    leading.delivery.forget(stream.frameworkId);
    this.init.logger.info('framework disconnected', { framework: stream.frameworkId });
    this.init
      .propose({
        type: 'disconnectFramework',
        frameworkId: stream.frameworkId,
        streamId: stream.id,
        atMs: this.now(),
      })
      .catch((error: unknown) =>
        this.init.logger.debug('cannot record a framework disconnection', { error: errorMessage(error) }),
      );
  }

  private async callHere(
    streamId: string,
    call: Exclude<DecodedCall, { type: 'SUBSCRIBE' }>,
    namespaces: NamespaceGrant,
  ): Promise<void> {
    const leading = this.leading;
    if (leading === null)
      throw new ShoalError('UNAVAILABLE', 'this node is becoming the leader: subscribe again');
    const stream = this.streams.get(streamId);
    if (stream === undefined || !stream.open)
      throw new ShoalError(
        'CONFLICT',
        `stream ${streamId} is not open on the leader (it ended, or the leader changed): subscribe again`,
      );
    if (stream.frameworkId !== call.frameworkId)
      throw new ShoalError(
        'PERMISSION_DENIED',
        `stream ${streamId} belongs to framework ${stream.frameworkId}, not ${call.frameworkId}`,
      );
    const summary = this.init.state.frameworks.get(call.frameworkId);
    if (summary === undefined) throw new ShoalError('NOT_FOUND', `no framework ${call.frameworkId}`);
    checkNamespace(namespaces, summary.info.role);
    const nowMs = this.now();
    const outcome = decideCall({ book: leading.book, registry: this.init.state.frameworks }, call, nowMs);
    this.send(outcome.events);
    if (outcome.command !== null) await this.proposeOrThrow(outcome.command);
    if (outcome.killClusterTaskId !== null)
      await this.proposeOrThrow({ type: 'killTask', taskId: outcome.killClusterTaskId, atMs: nowMs });
    if (outcome.launch !== null)
      await this.launch(leading, summary.info.user, outcome.launch, call.frameworkId);
    if (outcome.refusal !== null) throw outcome.refusal;
  }

  /** An ACCEPT's launches as one command; settled when it applies (applied()), or here if it cannot. */
  private async launch(
    leading: Leading,
    user: string,
    launch: {
      readonly acceptId: number;
      readonly launches: readonly { frameworkId: string; nodeId: string; taskId: string; spec: TaskSpec }[];
    },
    frameworkId: string,
  ): Promise<void> {
    const tasks = launch.launches.map((task) => ({
      id: newTaskId(),
      frameworkTaskId: task.taskId,
      nodeId: task.nodeId,
      // Exec tasks run as the framework's user unless they name one (Mesos: FrameworkInfo.user).
      spec: task.spec.driver === 'exec' && task.spec.user === undefined ? { ...task.spec, user } : task.spec,
    }));
    const first = tasks[0]?.id ?? '';
    this.accepts.set(first, {
      acceptId: launch.acceptId,
      frameworkId,
      taskIds: tasks.map((t) => t.frameworkTaskId),
    });
    try {
      const result = await this.init.propose({
        type: 'launchFrameworkTasks',
        frameworkId,
        tasks,
        atMs: this.now(),
      });
      if (!result.ok) throw new ShoalError(result.code, result.message);
    } catch (error) {
      // Not applied (applied() settles what was): give the offers' room back and say the tasks were dropped.
      if (this.accepts.delete(first) && this.leading === leading) {
        leading.book.settle(launch.acceptId);
        this.dropped(
          frameworkId,
          tasks.map((t) => t.frameworkTaskId),
          errorMessage(error),
        );
      }
      throw error;
    }
  }

  private dropped(frameworkId: string, taskIds: readonly string[], message: string): void {
    const atMs = this.now();
    this.send(
      taskIds.map((taskId) => ({
        type: 'UPDATE',
        frameworkId,
        taskId,
        status: { state: 'TASK_DROPPED', message, nodeId: null, atMs },
        uuid: null,
      })),
    );
  }

  private async proposeOrThrow(command: Command): Promise<void> {
    const result = await this.init.propose(command);
    if (!result.ok) throw new ShoalError(result.code, result.message);
  }

  /** Writes events to the streams of their frameworks (events of frameworks without one here are dropped). */
  private send(events: readonly SchedulerEvent[]): void {
    const { state } = this.init;
    const facts = (
      nodeId: string,
    ): { name: string; labels: Readonly<Record<string, string>> } | undefined => {
      const node = state.nodes.get(nodeId);
      return node === undefined ? undefined : { name: node.name, labels: node.labels };
    };
    for (const event of events) {
      const streamId =
        event.type === 'ERROR' ? event.streamId : state.frameworks.get(event.frameworkId)?.streamId;
      const stream = streamId === null || streamId === undefined ? undefined : this.streams.get(streamId);
      stream?.push(encodeSchedulerEvent(event, facts));
    }
  }

  /** After every applied entry, on every node: what a framework command asks of the leader's streams. */
  applied(command: Command, result: ApplyResult): void {
    const effects = this.init.state.frameworkEffects;
    if (effects !== null) {
      this.send(effects.events);
      if (effects.closeStreamId !== null) this.streams.get(effects.closeStreamId)?.end();
    }
    // Gone (torn down, expired): no more offers or updates for it.
    if (
      (command.type === 'teardownFramework' || command.type === 'expireFramework') &&
      !this.init.state.frameworks.has(command.frameworkId)
    ) {
      this.leading?.book.unsubscribe(command.frameworkId);
      this.leading?.delivery.forget(command.frameworkId);
    }
    if (command.type !== 'launchFrameworkTasks') return;
    const first = command.tasks[0]?.id ?? '';
    const accept = this.accepts.get(first);
    if (accept === undefined) return;
    this.accepts.delete(first);
    // Settled in the same turn as the apply, before any round: the launched room is counted once.
    this.leading?.book.settle(accept.acceptId);
    if (!result.ok) this.dropped(accept.frameworkId, accept.taskIds, result.message);
  }

  // ---- the leader's duties ---------------------------------------------------------------------------

  /** This node leads in `term`: a book of its own for the term (the last one's offers are void). */
  lead(term: number): void {
    const key = `${this.init.selfId}.${term}`;
    if (this.leading?.term === key) return;
    this.stepDown('the leader changed: subscribe again');
    this.leading = {
      term: key,
      book: new OfferBook({ epoch: key }),
      delivery: new UpdateDelivery(),
      lastRoundMs: 0,
      roundTimer: null,
      expiring: new Set(),
    };
    // Frameworks subscribed through the last leader hold no stream here: their failover clocks start now.
    const atMs = this.now();
    for (const orphan of this.init.state.frameworks.orphans(new Set(this.streams.keys())))
      this.init
        .propose({
          type: 'disconnectFramework',
          frameworkId: orphan.frameworkId,
          streamId: orphan.streamId,
          atMs,
        })
        .catch((error: unknown) =>
          this.init.logger.debug('cannot record an orphaned framework', { error: errorMessage(error) }),
        );
  }

  /** No longer the leader: every stream here ends, with why. */
  stepDown(reason: string): void {
    const leading = this.leading;
    this.leading = null;
    if (leading?.roundTimer) clearTimeout(leading.roundTimer);
    for (const stream of [...this.streams.values()]) {
      stream.push({ type: 'ERROR', error: { message: reason } });
      stream.end();
    }
    this.streams.clear();
    this.accepts.clear();
  }

  /** The room offers hold now, for the allocator (so no plan places there). */
  holds(): Map<string, Hold> {
    const holds = new Map<string, Hold>();
    const leading = this.leading;
    if (leading === null) return holds;
    for (const offer of leading.book.offers()) {
      const info = this.init.state.frameworks.get(offer.frameworkId)?.info;
      holds.set(`offer:${offer.id}`, {
        nodeId: offer.nodeId,
        priority: info?.priority ?? 0,
        namespace: info?.role ?? 'default',
        request: offer.resources,
      });
    }
    return holds;
  }

  /**
   * Offers, rescinds, expiries and redelivery: at most every offerRoundIntervalMs (`now`: at once), and
   * again when the interval has passed if asked meanwhile.
   */
  round(now = false): void {
    const leading = this.leading;
    if (leading === null) return;
    const nowMs = this.now();
    const waitMs = leading.lastRoundMs + offerRoundIntervalMs - nowMs;
    if (!now && waitMs > 0) {
      leading.roundTimer ??= setTimeout(() => {
        leading.roundTimer = null;
        this.round();
      }, waitMs);
      return;
    }
    leading.lastRoundMs = nowMs;
    const { state } = this.init;
    for (const frameworkId of state.frameworks.dueForExpiry(nowMs)) {
      if (leading.expiring.has(frameworkId)) continue;
      leading.expiring.add(frameworkId);
      this.init.logger.info('framework failover timeout passed: its tasks are killed', {
        framework: frameworkId,
      });
      this.init
        .propose({ type: 'expireFramework', frameworkId, atMs: nowMs })
        .catch((error: unknown) => this.init.logger.debug('expiry failed', { error: errorMessage(error) }))
        .finally(() => leading.expiring.delete(frameworkId));
    }
    // With no framework there is nothing to offer: the view reads every live task, too dear to build for nothing.
    if (leading.book.idle()) return;
    try {
      this.send(leading.book.offerRound(this.view(nowMs), nowMs));
    } catch (error) {
      // A broken invariant in the book: start it afresh (frameworks keep their streams, offers are redone).
      this.init.logger.warn('the offer book failed; offers are made afresh', { error: errorMessage(error) });
      if (!isFrameworkError(error)) this.stepDown('the leader restarted its offers: subscribe again');
      return;
    }
    for (const stream of this.streams.values()) {
      if (!leading.book.isSubscribed(stream.frameworkId)) continue;
      this.send(
        leading.delivery.due(stream.frameworkId, state.frameworks.pendingUpdates(stream.frameworkId), nowMs),
      );
    }
  }

  /** The cluster as one offer round reads it. */
  private view(nowMs: number): OfferView {
    const { state } = this.init;
    const nodes: OfferNode[] = [];
    for (const node of state.nodes.values()) {
      const free = state.freeOn(node.id);
      nodes.push({
        id: node.id,
        capacity: node.capacity,
        free: {
          cpuMillis: free.cpuMillis,
          memoryBytes: free.memoryBytes,
          diskBytes: free.diskBytes,
          devices: free.devices,
        },
        up: node.status === 'up' && this.init.isAlive(node.id),
        schedulable: !node.draining,
        // The node's dynamic range less what its tasks hold: ports a framework's tasks may name.
        ports: freePortRanges(node.dynamicPorts ?? dynamicPortRangeDefault, state.portsInUseOn(node.id)),
      });
    }
    const namespaceUsage = new Map<string, Resources>();
    const frameworkUsage = new Map<string, Resources>();
    for (const node of state.nodes.values())
      for (const task of state.liveTasksOn(node.id)) {
        if (task.state === 'pending' || isTerminal(task.state)) continue;
        const request = requestOf(task.spec);
        addTo(namespaceUsage, task.spec.namespace ?? 'default', request);
        if (task.framework !== undefined) addTo(frameworkUsage, task.framework.id, request);
      }
    const builtIn: BuiltInDemand[] = [];
    for (const task of state.pendingTasks()) {
      if (builtIn.length >= builtInDemandsMax) break;
      if (task.notBeforeMs !== null && task.notBeforeMs > nowMs) continue;
      const constraints = compileConstraints(taskConstraints(task.spec), task.spec.labelConstraints);
      builtIn.push({
        priority: task.spec.priority,
        namespace: task.spec.namespace ?? 'default',
        request: requestOf(task.spec),
        eligible: (nodeId) => {
          const node = state.nodes.get(nodeId);
          return (
            node !== undefined &&
            node.drivers.includes(task.spec.driver) &&
            matchesAll(node.labels, constraints)
          );
        },
      });
    }
    return {
      nodes,
      namespaces: [...state.namespaces.values()].map(toNamespacePolicy),
      namespaceUsage,
      frameworkUsage,
      builtIn,
    };
  }

  // ---- relaying, on a follower -----------------------------------------------------------------------

  private leaderPeer(): PeerId {
    const leaderId = this.init.leaderId();
    if (leaderId === null) throw new ShoalError('NO_LEADER', 'no leader is known: subscribe again shortly');
    return peerIdFromString(leaderId);
  }

  /** A follower's relay of a subscription to the leader: its events, copied from the libp2p stream. */
  private async relaySubscription(
    body: unknown,
    namespaces: NamespaceGrant,
    signal: AbortSignal,
  ): Promise<Subscription> {
    if (this.relayed >= schedulerStreamsMax)
      throw new ShoalError(
        'UNAVAILABLE',
        `this node relays ${schedulerStreamsMax} scheduler streams: try another`,
      );
    const leader = this.leaderPeer();
    let stream: Stream;
    try {
      stream = await this.init.libp2p.dialProtocol(leader, schedulerProtocol, {
        signal: AbortSignal.any([signal, AbortSignal.timeout(relayDialTimeoutMs)]),
      });
    } catch (error) {
      throw new ShoalError('UNAVAILABLE', `cannot reach the leader: ${errorMessage(error)}`);
    }
    const io = jsonStream(stream);
    const onAbort = (): void => stream.abort(new Error('the framework went away'));
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await io.write({ call: body, namespaces });
      const first = (await io.read({
        signal: AbortSignal.any([signal, AbortSignal.timeout(callTimeoutMs)]),
      })) as RelayFrame;
      if ('error' in first) throw new ShoalError(first.error.code as ShoalError['code'], first.error.message);
      if (!('streamId' in first)) throw new ShoalError('INTERNAL', 'the leader did not open the stream');
      this.relayed++;
      const ended = (): void => {
        this.relayed--;
        signal.removeEventListener('abort', onAbort);
        stream.abort(new Error('relay ended'));
      };
      async function* events(): AsyncGenerator<SchedulerEventJson, void, undefined> {
        try {
          for (;;) {
            const frame = (await io.read({ signal })) as RelayFrame;
            if ('event' in frame) yield frame.event;
          }
        } catch {
          // The leader ended the stream, or went away: the framework subscribes again.
        } finally {
          ended();
        }
      }
      return { streamId: first.streamId, events: events() };
    } catch (error) {
      signal.removeEventListener('abort', onAbort);
      stream.abort(new Error('relay failed'));
      throw error;
    }
  }

  /** The leader's end of a relayed subscription. */
  private async serveRelay(stream: Stream): Promise<void> {
    const io = jsonStream(stream);
    // The follower (or its framework) went away: the stream ends here, which starts the failover clock.
    const gone = new AbortController();
    stream.addEventListener('close', () => gone.abort(), { once: true });
    let subscription: Subscription | null = null;
    try {
      const request = parseRelayRequest(await io.read({ signal: AbortSignal.timeout(relayDialTimeoutMs) }));
      const call = decodeSchedulerCall(request.call);
      if (call.type !== 'SUBSCRIBE') throw new ShoalError('INVALID_ARGUMENT', 'a relay carries a SUBSCRIBE');
      if (!this.init.isLeader())
        throw new ShoalError('NOT_LEADER', 'this node is no longer the leader: subscribe again');
      subscription = await this.subscribeHere(call, request.namespaces, gone.signal);
    } catch (error) {
      const code = error instanceof ShoalError ? error.code : 'INTERNAL';
      await io
        .write({ error: { code, message: errorMessage(error) } })
        .then(() => stream.close())
        .catch(() => stream.abort(new Error('relay refused')));
      return;
    }
    const events = subscription.events[Symbol.asyncIterator]();
    try {
      await io.write({ streamId: subscription.streamId });
      for (let next = await events.next(); next.done !== true; next = await events.next())
        await io.write({ event: next.value });
      await stream.close();
    } catch {
      stream.abort(new Error('relay ended'));
    } finally {
      gone.abort();
    }
  }
}

type RelayFrame =
  | { readonly streamId: string }
  | { readonly event: SchedulerEventJson }
  | { readonly error: { readonly code: string; readonly message: string } };

function parseRelayRequest(value: unknown): { call: unknown; namespaces: NamespaceGrant } {
  if (typeof value !== 'object' || value === null || !('call' in value))
    throw new ShoalError('INVALID_ARGUMENT', 'a relayed subscription carries a call');
  return { call: value.call, namespaces: parseGrant('namespaces' in value ? value.namespaces : null) };
}

function parseForwardedCall(value: unknown): { streamId: string; call: unknown; namespaces: NamespaceGrant } {
  if (typeof value !== 'object' || value === null || !('call' in value) || !('streamId' in value))
    throw new ShoalError('INVALID_ARGUMENT', 'a forwarded call carries a stream id and a call');
  if (typeof value.streamId !== 'string') throw new ShoalError('INVALID_ARGUMENT', 'a stream id is a string');
  return {
    streamId: value.streamId,
    call: value.call,
    namespaces: parseGrant('namespaces' in value ? value.namespaces : null),
  };
}

function parseGrant(value: unknown): NamespaceGrant {
  if (value === null) return null;
  if (Array.isArray(value) && value.every((item) => typeof item === 'string')) return value;
  throw new ShoalError('INVALID_ARGUMENT', 'namespaces are a list of names, or null');
}

function checkNamespace(namespaces: NamespaceGrant, role: string): void {
  if (namespaces !== null && !namespaces.includes(role))
    throw new ShoalError(
      'PERMISSION_DENIED',
      `this token may not run frameworks in namespace ${role} (it covers ${namespaces.join(', ')})`,
    );
}

/** The ranges of `range` that no port of `inUse` is in. */
export function freePortRanges(
  range: { readonly min: number; readonly max: number },
  inUse: readonly number[],
): PortRange[] {
  const taken = normalizeRanges(inUse.map((port) => ({ begin: port, end: port })));
  return subtractRanges([{ begin: range.min, end: range.max }], taken);
}

function requestOf(spec: TaskSpec): Resources {
  return {
    cpuMillis: spec.cpuMillis,
    memoryBytes: spec.memoryBytes,
    ...(spec.diskBytes === undefined ? {} : { diskBytes: spec.diskBytes }),
    ...(spec.devices === undefined ? {} : { devices: spec.devices }),
  };
}

function addTo(usage: Map<string, Resources>, key: string, request: Resources): void {
  const before = usage.get(key) ?? { cpuMillis: 0, memoryBytes: 0, diskBytes: 0, devices: {} };
  const devices: Record<string, number> = { ...before.devices };
  for (const [kind, count] of Object.entries(request.devices ?? {}))
    devices[kind] = (devices[kind] ?? 0) + count;
  usage.set(key, {
    cpuMillis: before.cpuMillis + request.cpuMillis,
    memoryBytes: before.memoryBytes + request.memoryBytes,
    diskBytes: (before.diskBytes ?? 0) + (request.diskBytes ?? 0),
    devices,
  });
}
