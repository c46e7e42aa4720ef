/**
 * A deterministic simulation of a membership cluster on one thread: many MembershipState machines on a
 * simulated network with latency, loss, cut links, crashed processes (peers learn at once, as from a
 * TCP reset), hung hosts (silence), and paused processes (SIGSTOP: nothing runs, messages queue, and on
 * resume the node notices the stall as the shell would). Given a seed it replays exactly. Every message
 * goes through JSON and the wire schemas, as it would between processes, and its bytes are counted as
 * the shell counts them (service.ts, transport.ts).
 *
 * Connections are modelled as the shell keeps them: a full mesh while the cluster fits in
 * peerConnectionsMax; beyond that, a connection opens when two nodes exchange a message, and each node
 * closes its least recently used ones beyond peerConnectionsMax every second. A closed connection (a
 * crash resets them all) prompts an out-of-turn probe only where N ≤ peerConnectionsMax, as in the shell,
 * where connections churn by design beyond it. Thousands of nodes start converged (startConverged), as
 * joining them one by one would take O(N² log N) messages.
 */
import { createHmac } from 'node:crypto';
import { assert } from '../shared/assert.ts';
import { seededRandom, type Random } from '../shared/random.ts';
import { defaultMembershipConfig, type MembershipConfig } from './config.ts';
import {
  swimMessageSchema,
  syncReplySchema,
  syncRequestSchema,
  type SwimMessage,
  type SyncEntry,
  type SyncReply,
  type SyncRequest,
} from './messages.ts';
import type { MembershipCrypto, NodeRecord, SignedRecord } from './records.ts';
import { MembershipState, type MemberState } from './state.ts';

export interface SimulationOptions {
  readonly seed: number;
  readonly config?: Partial<MembershipConfig>;
  /** One-way delivery time, uniform in [min, max]. */
  readonly latencyMsMin?: number;
  readonly latencyMsMax?: number;
  /** Share of datagrams lost (push-pull is reliable, as a TCP request is). */
  readonly dropRate?: number;
  /** Simulated time per step: the resolution of the nodes' timers. */
  readonly stepMs?: number;
}

export interface SimTransition {
  readonly atMs: number;
  readonly observer: string;
  readonly subject: string;
  readonly from: MemberState | null;
  readonly to: MemberState;
}

type Process = 'running' | 'paused' | 'crashed' | 'hung';

/** What a node sent, counted as the shell counts it. */
export interface SimTraffic {
  /** SWIM frames (probes, acks, ping-reqs, nacks, gossip) and their bytes: varint length + JSON. */
  frames: number;
  frameBytes: number;
  /** Push-pull messages (requests, replies, last legs) and their bytes of JSON. */
  syncMessages: number;
  syncBytes: number;
}

interface SimNode {
  readonly id: string;
  core: MembershipState | null;
  process: Process;
  boots: number;
  pausedAtMs: number;
  /** Messages that reached a paused node, handled when it resumes. */
  readonly held: (() => void)[];
  /** Open connections: peer → when this node last used it (sent or received on it). */
  readonly connections: Map<string, number>;
  nextHousekeepingMs: number;
  /** When its state machine next has work to do (nextDeadlineMs), or the next step after an input. */
  nextTickMs: number;
  readonly traffic: SimTraffic;
}

/** How often the shell prunes connections and tells the state machine which are open (service.ts). */
const housekeepingIntervalMs = 1000;

type Event =
  | { kind: 'datagram'; from: string; to: string; body: string }
  | { kind: 'unreachable'; from: string; to: string }
  | { kind: 'connectionLost'; from: string; to: string }
  | { kind: 'syncRequest'; from: string; to: string; body: string; last: boolean }
  | { kind: 'syncReply'; from: string; to: string; body: string };

interface Scheduled {
  readonly atMs: number;
  readonly order: number;
  readonly event: Event;
}

/**
 * HMAC "signatures" keyed by the signer's id: fast and deterministic, and a forger's differ. 64 bytes,
 * as long as the Ed25519 signatures of the real shell, so messages have their real size.
 */
export function simulatedCrypto(signerId: string, secret = signerId): MembershipCrypto {
  return {
    sign: (bytes) => createHmac('sha512', `key:${secret}`).update(bytes).digest(),
    verify: (id, bytes, signature) =>
      Buffer.from(signature).equals(createHmac('sha512', `key:${id}`).update(bytes).digest()),
  };
}

export function simulatedRecord(id: string, incarnation: number): Omit<NodeRecord, 'revision' | 'leaving'> {
  return {
    id,
    name: id,
    addresses: [`/sim/${id}`],
    address: `${id}:7946`,
    cpuMillis: 1000,
    memoryBytes: 1 << 30,
    labels: {},
    drivers: ['exec'],
    version: 'sim',
    incarnation,
  };
}

export class MembershipSimulation {
  readonly random: Random;
  readonly config: MembershipConfig;
  readonly nodes = new Map<string, SimNode>();
  readonly transitions: SimTransition[] = [];
  /** Datagrams delivered, for load checks. */
  datagrams = 0;
  /** What every node sent, summed (each node's own: trafficOf). */
  readonly traffic: SimTraffic = emptyTraffic();
  private nowMs = 0;
  private queue: Scheduled[] = [];
  private order = 0;
  private readonly cut = new Set<string>();
  private readonly options: Required<Omit<SimulationOptions, 'config'>>;

  constructor(options: SimulationOptions) {
    this.options = {
      seed: options.seed,
      latencyMsMin: options.latencyMsMin ?? 0.2,
      latencyMsMax: options.latencyMsMax ?? 2,
      dropRate: options.dropRate ?? 0,
      stepMs: options.stepMs ?? 5,
    };
    this.config = { ...defaultMembershipConfig, ...options.config };
    this.random = seededRandom(options.seed);
  }

  get now(): number {
    return this.nowMs;
  }

  /** Starts (or restarts, with the next incarnation) node `id`, joining through `seed` if given. */
  start(id: string, seed?: string): void {
    const node = this.boot(id);
    // A full mesh while the cluster is small enough for one, as a real cluster keeps.
    const others = [...this.nodes.values()].filter((other) => other !== node && other.core);
    if (others.length <= this.config.peerConnectionsMax) {
      for (const other of others) {
        this.connect(node, other);
        other.core?.setConnected(other.connections.keys());
      }
      node.core?.setConnected(node.connections.keys());
    }
    this.collect(node);
    if (seed !== undefined) this.sync(id, seed);
  }

  /**
   * Starts `ids` as a cluster that converged long ago: every node knows every other as alive and has
   * nothing left to gossip (MembershipState.adoptConvergedView). Connections: a full mesh if the
   * cluster fits in peerConnectionsMax, else none until traffic opens them.
   */
  startConverged(ids: readonly string[]): void {
    const started = ids.map((id) => {
      assert(!this.nodes.get(id)?.core, `${id} is running`);
      return this.boot(id);
    });
    const records: SignedRecord[] = started.map((node) => {
      const core = this.core(node.id);
      const own = core.syncRequest().entries[0];
      assert(own, 'a sync request carries its sender');
      return { signed: own.record, record: core.record };
    });
    if (started.length <= this.config.peerConnectionsMax + 1) {
      for (const [i, a] of started.entries()) for (const b of started.slice(i + 1)) this.connect(a, b);
    }
    for (const node of started) {
      const core = this.core(node.id);
      core.adoptConvergedView(records, this.nowMs);
      core.setConnected(node.connections.keys());
      this.collect(node);
    }
  }

  /**
   * The process dies; its host answers with resets, so peers learn at once that it is unreachable, and
   * every peer's connection to it closes (which, in a small cluster, prompts them to probe it).
   */
  crash(id: string): void {
    const node = this.mustNode(id);
    node.process = 'crashed';
    node.core = null;
    for (const peer of [...node.connections.keys()]) {
      const other = this.nodes.get(peer);
      if (other) this.disconnect(node, other);
    }
  }

  /** The host goes silent (power cut, cable pulled): messages vanish, nobody is told. */
  hang(id: string): void {
    const node = this.mustNode(id);
    node.process = 'hung';
    node.core = null;
  }

  /** SIGSTOP: the node runs nothing; messages to it wait in its socket buffers. */
  pause(id: string): void {
    const node = this.mustNode(id);
    assert(node.process === 'running', `${id} is not running`);
    node.process = 'paused';
    node.pausedAtMs = this.nowMs;
  }

  /** SIGCONT: the node notices the stall, handles what queued, then its timers fire. */
  resume(id: string): void {
    const node = this.mustNode(id);
    assert(node.process === 'paused' && node.core, `${id} is not paused`);
    node.process = 'running';
    node.core.noteStall(this.nowMs - node.pausedAtMs, this.nowMs);
    const held = node.held.splice(0);
    for (const deliver of held) deliver();
    node.core.tick(this.nowMs);
    this.collect(node);
  }

  leave(id: string): void {
    const node = this.mustNode(id);
    assert(node.core, `${id} is not running`);
    node.core.leave(this.nowMs);
    this.collect(node);
  }

  /** Cuts both directions between every node of `a` and every node of `b`. */
  partition(a: readonly string[], b: readonly string[]): void {
    for (const x of a) for (const y of b) this.cut.add(`${x}>${y}`).add(`${y}>${x}`);
  }

  heal(): void {
    this.cut.clear();
  }

  /** What `observer` believes about `subject`, or null if it does not know it (or is down). */
  view(observer: string, subject: string): MemberState | null {
    return this.nodes.get(observer)?.core?.get(subject)?.state ?? null;
  }

  core(id: string): MembershipState {
    const core = this.mustNode(id).core;
    assert(core, `${id} is not running`);
    return core;
  }

  /** What node `id` sent since it was first started. */
  trafficOf(id: string): SimTraffic {
    return { ...this.mustNode(id).traffic };
  }

  /** Running or paused nodes. */
  live(): string[] {
    return [...this.nodes.values()].filter((n) => n.core !== null).map((n) => n.id);
  }

  runFor(ms: number): void {
    const until = this.nowMs + ms;
    while (this.nowMs < until) this.step();
  }

  /** Runs until `done` holds (checked every step); returns the simulated time it took, or null. */
  runUntil(done: () => boolean, timeoutMs: number): number | null {
    const start = this.nowMs;
    while (this.nowMs - start < timeoutMs) {
      if (done()) return this.nowMs - start;
      this.step();
    }
    return done() ? this.nowMs - start : null;
  }

  /** Every running node other than `except` sees `subject` in `state`. */
  allSee(subject: string, state: MemberState, except: readonly string[] = []): boolean {
    for (const node of this.nodes.values()) {
      if (node.process !== 'running' || node.id === subject || except.includes(node.id)) continue;
      if (node.core?.get(subject)?.state !== state) return false;
    }
    return true;
  }

  transitionsTo(state: MemberState, sinceMs = 0): SimTransition[] {
    return this.transitions.filter((t) => t.to === state && t.atMs >= sinceMs);
  }

  private boot(id: string): SimNode {
    let node = this.nodes.get(id);
    if (!node) {
      node = {
        id,
        core: null,
        process: 'running',
        boots: 0,
        pausedAtMs: 0,
        held: [],
        connections: new Map(),
        nextHousekeepingMs: 0,
        nextTickMs: 0,
        traffic: emptyTraffic(),
      };
      this.nodes.set(id, node);
    }
    node.boots++;
    node.process = 'running';
    node.held.length = 0;
    node.nextHousekeepingMs = this.nowMs + housekeepingIntervalMs;
    node.core = new MembershipState({
      record: simulatedRecord(id, node.boots),
      config: this.config,
      random: seededRandom(this.random.int(0, 2 ** 31)),
      crypto: simulatedCrypto(id),
      nowMs: this.nowMs,
    });
    return node;
  }

  /**
   * Delivers what is due, then ticks, in random order, the running nodes whose state machine has work
   * (nextDeadlineMs, when the shell ticks it too), that had an input since their last tick, or whose
   * shell's housekeeping is due. Not ticking idle nodes every step saves most of the time at thousands
   * of nodes.
   */
  private step(): void {
    this.nowMs += this.options.stepMs;
    this.deliverDue();
    const due: SimNode[] = [];
    for (const node of this.nodes.values()) {
      if (node.process !== 'running' || !node.core) continue;
      if (node.nextTickMs <= this.nowMs || node.nextHousekeepingMs <= this.nowMs) due.push(node);
    }
    for (const node of this.shuffle(due)) {
      const core = node.core;
      if (!core) continue;
      if (this.nowMs >= node.nextHousekeepingMs) this.housekeeping(node);
      core.tick(this.nowMs);
      this.collect(node);
      node.nextTickMs = core.nextDeadlineMs();
    }
  }

  /** The shell's housekeeping: closes the least recently used connections beyond the bound. */
  private housekeeping(node: SimNode): void {
    node.nextHousekeepingMs = this.nowMs + housekeepingIntervalMs;
    const excess = node.connections.size - this.config.peerConnectionsMax;
    if (excess > 0) {
      const oldest = [...node.connections].sort((a, b) => a[1] - b[1]).slice(0, excess);
      for (const [peer] of oldest) {
        const other = this.nodes.get(peer);
        if (other) this.disconnect(node, other);
      }
    }
    node.core?.setConnected(node.connections.keys());
  }

  private connect(a: SimNode, b: SimNode): void {
    a.connections.set(b.id, this.nowMs);
    b.connections.set(a.id, this.nowMs);
  }

  /**
   * `a` closes its connection to `b` (or crashed, and its host reset it). `b`'s shell hears of it and,
   * like the service, tells its state machine only while N ≤ peerConnectionsMax: beyond that,
   * connections churn by design (and a prune happens only beyond it).
   */
  private disconnect(a: SimNode, b: SimNode): void {
    if (!a.connections.delete(b.id)) return;
    b.connections.delete(a.id);
    if (b.core && b.core.memberCount() <= this.config.peerConnectionsMax)
      this.schedule({ kind: 'connectionLost', from: a.id, to: b.id });
  }

  private deliverDue(): void {
    this.queue.sort((a, b) => a.atMs - b.atMs || a.order - b.order);
    let index = 0;
    while (index < this.queue.length && (this.queue[index]?.atMs ?? Infinity) <= this.nowMs) {
      const item = this.queue[index++];
      if (item) this.deliver(item.event);
    }
    this.queue = this.queue.slice(index);
  }

  private deliver(event: Event): void {
    const target = this.nodes.get(event.to);
    if (!target) return;
    if (event.kind === 'unreachable' || event.kind === 'connectionLost') {
      if (target.process === 'running' && target.core) {
        if (event.kind === 'unreachable') target.core.unreachable(event.from, this.nowMs);
        else target.core.connectionLost(event.from, this.nowMs);
        this.collect(target);
      }
      return;
    }
    if (this.cut.has(`${event.from}>${event.to}`)) return;
    if (target.process === 'crashed') {
      // A reset comes back to the sender (a reply to a dead node is just lost).
      if (event.kind === 'datagram' || event.kind === 'syncRequest')
        this.schedule({ kind: 'unreachable', from: event.to, to: event.from });
      return;
    }
    if (target.process === 'hung' || !target.core) return;
    const sender = this.nodes.get(event.from);
    if (sender) this.connect(sender, target);
    const handle = (): void => this.handle(target, event);
    if (target.process === 'paused') target.held.push(handle);
    else handle();
  }

  private handle(target: SimNode, event: Exclude<Event, { kind: 'unreachable' | 'connectionLost' }>): void {
    const core = target.core;
    if (!core) return;
    switch (event.kind) {
      case 'datagram': {
        this.datagrams++;
        const message = swimMessageSchema.parse(JSON.parse(event.body));
        core.receive(event.from, message, this.nowMs);
        break;
      }
      case 'syncRequest': {
        const request = syncRequestSchema.parse(JSON.parse(event.body));
        const reply = core.handleSyncRequest(event.from, request, this.nowMs);
        if (!event.last) {
          const body = JSON.stringify(reply);
          this.countSync(target, body);
          this.schedule({ kind: 'syncReply', from: target.id, to: event.from, body });
        }
        break;
      }
      case 'syncReply': {
        const reply: SyncReply = syncReplySchema.parse(JSON.parse(event.body));
        const back: SyncEntry[] = core.handleSyncReply(event.from, reply, this.nowMs);
        if (back.length > 0) {
          const request: SyncRequest = { digest: null, entries: back };
          const body = JSON.stringify(request);
          this.countSync(target, body);
          this.schedule({ kind: 'syncRequest', from: target.id, to: event.from, body, last: true });
        }
        break;
      }
    }
    this.collect(target);
  }

  private sync(from: string, to: string): void {
    const node = this.mustNode(from);
    // The dial fails, refused by a crashed node's host or unanswered by a hung one: nothing is sent, and
    // no digest need be made (every node tries a dead member every few seconds).
    const target = this.nodes.get(to)?.process;
    if ((target === 'crashed' || target === 'hung') && !this.cut.has(`${from}>${to}`)) {
      if (target === 'crashed') this.schedule({ kind: 'unreachable', from: to, to: from });
      return;
    }
    const body = JSON.stringify(this.core(from).syncRequest());
    this.countSync(node, body);
    this.schedule({ kind: 'syncRequest', from, to, body, last: false });
  }

  private countSync(node: SimNode, body: string): void {
    const bytes = Buffer.byteLength(body);
    node.traffic.syncMessages++;
    node.traffic.syncBytes += bytes;
    this.traffic.syncMessages++;
    this.traffic.syncBytes += bytes;
  }

  /** Takes a node's outputs: messages onto the network, push-pulls started, transitions logged. */
  private collect(node: SimNode): void {
    const core = node.core;
    if (!core) return;
    // An input may have changed its deadlines: it is ticked at the next step.
    node.nextTickMs = Math.min(node.nextTickMs, this.nowMs);
    for (const transition of core.takeTransitions()) {
      this.transitions.push({
        atMs: this.nowMs,
        observer: node.id,
        subject: transition.id,
        from: transition.from,
        to: transition.to,
      });
    }
    for (const out of core.takeMessages()) this.sendDatagram(node, out.to, out.message);
    for (const peer of core.takeSyncs()) this.sync(node.id, peer);
  }

  /** A SWIM frame, counted as the transport counts it (varint length prefix + JSON), even if lost. */
  private sendDatagram(from: SimNode, to: string, message: SwimMessage): void {
    const body = JSON.stringify(message);
    const bytes = frameBytes(Buffer.byteLength(body));
    from.traffic.frames++;
    from.traffic.frameBytes += bytes;
    this.traffic.frames++;
    this.traffic.frameBytes += bytes;
    if (this.options.dropRate > 0 && this.random.next() < this.options.dropRate) return;
    this.schedule({ kind: 'datagram', from: from.id, to, body });
  }

  private schedule(event: Event): void {
    const { latencyMsMin, latencyMsMax } = this.options;
    const latency = latencyMsMin + this.random.next() * (latencyMsMax - latencyMsMin);
    this.queue.push({ atMs: this.nowMs + latency, order: this.order++, event });
  }

  private shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.random.int(0, i + 1);
      const a = items[i] as T;
      items[i] = items[j] as T;
      items[j] = a;
    }
    return items;
  }

  private mustNode(id: string): SimNode {
    const node = this.nodes.get(id);
    assert(node, `no node ${id}`);
    return node;
  }
}

function emptyTraffic(): SimTraffic {
  return { frames: 0, frameBytes: 0, syncMessages: 0, syncBytes: 0 };
}

/** A frame's size on a stream: its length as an unsigned varint, then the body. */
function frameBytes(bodyBytes: number): number {
  let prefix = 1;
  for (let rest = bodyBytes; rest >= 0x80; rest = Math.floor(rest / 0x80)) prefix++;
  return prefix + bodyBytes;
}
