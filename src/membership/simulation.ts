/**
 * A deterministic simulation of a membership cluster on one thread: many MembershipState machines on a
 * simulated network with latency, loss, cut links, crashed processes (peers learn at once, as from a
 * TCP reset), hung hosts (silence), and paused processes (SIGSTOP: nothing runs, messages queue, and on
 * resume the node notices the stall as the shell would). Given a seed it replays exactly. Every message
 * goes through JSON and the wire schemas, as it would between processes.
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
import type { MembershipCrypto, NodeRecord } from './records.ts';
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

interface SimNode {
  readonly id: string;
  core: MembershipState | null;
  process: Process;
  boots: number;
  pausedAtMs: number;
  /** Messages that reached a paused node, handled when it resumes. */
  readonly held: (() => void)[];
}

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

/** HMAC "signatures" keyed by the signer's id: fast and deterministic, and a forger's differ. */
export function simulatedCrypto(signerId: string, secret = signerId): MembershipCrypto {
  return {
    sign: (bytes) => createHmac('sha256', `key:${secret}`).update(bytes).digest(),
    verify: (id, bytes, signature) =>
      Buffer.from(signature).equals(createHmac('sha256', `key:${id}`).update(bytes).digest()),
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
    let node = this.nodes.get(id);
    if (!node) {
      node = { id, core: null, process: 'running', boots: 0, pausedAtMs: 0, held: [] };
      this.nodes.set(id, node);
    }
    node.boots++;
    node.process = 'running';
    node.held.length = 0;
    node.core = new MembershipState({
      record: simulatedRecord(id, node.boots),
      config: this.config,
      random: seededRandom(this.random.int(0, 2 ** 31)),
      crypto: simulatedCrypto(id),
      nowMs: this.nowMs,
    });
    // A full mesh, as a real cluster below peerConnectionsMax members keeps.
    for (const other of this.nodes.values())
      other.core?.setConnected([...this.nodes.keys()].filter((x) => x !== other.id));
    this.collect(node);
    if (seed !== undefined) this.sync(id, seed);
  }

  /**
   * The process dies; its host answers with resets, so peers learn at once that it is unreachable, and
   * every peer's connection to it (a full mesh here) closes.
   */
  crash(id: string): void {
    const node = this.mustNode(id);
    node.process = 'crashed';
    node.core = null;
    for (const other of this.nodes.values()) {
      if (other.id !== id && other.core) this.schedule({ kind: 'connectionLost', from: id, to: other.id });
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

  private step(): void {
    this.nowMs += this.options.stepMs;
    this.deliverDue();
    const running = [...this.nodes.values()].filter((n) => n.process === 'running' && n.core);
    for (const node of this.shuffle(running)) {
      node.core?.tick(this.nowMs);
      this.collect(node);
    }
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
        if (!event.last)
          this.schedule({ kind: 'syncReply', from: target.id, to: event.from, body: JSON.stringify(reply) });
        break;
      }
      case 'syncReply': {
        const reply: SyncReply = syncReplySchema.parse(JSON.parse(event.body));
        const back: SyncEntry[] = core.handleSyncReply(event.from, reply, this.nowMs);
        if (back.length > 0) {
          const request: SyncRequest = { digest: null, entries: back };
          this.schedule({
            kind: 'syncRequest',
            from: target.id,
            to: event.from,
            body: JSON.stringify(request),
            last: true,
          });
        }
        break;
      }
    }
    this.collect(target);
  }

  private sync(from: string, to: string): void {
    const core = this.core(from);
    this.schedule({ kind: 'syncRequest', from, to, body: JSON.stringify(core.syncRequest()), last: false });
  }

  /** Takes a node's outputs: messages onto the network, push-pulls started, transitions logged. */
  private collect(node: SimNode): void {
    const core = node.core;
    if (!core) return;
    for (const transition of core.takeTransitions()) {
      this.transitions.push({
        atMs: this.nowMs,
        observer: node.id,
        subject: transition.id,
        from: transition.from,
        to: transition.to,
      });
    }
    for (const out of core.takeMessages()) this.sendDatagram(node.id, out.to, out.message);
    for (const peer of core.takeSyncs()) this.sync(node.id, peer);
  }

  private sendDatagram(from: string, to: string, message: SwimMessage): void {
    if (this.options.dropRate > 0 && this.random.next() < this.options.dropRate) return;
    this.schedule({ kind: 'datagram', from, to, body: JSON.stringify(message) });
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
