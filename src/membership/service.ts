/**
 * Membership over libp2p: the shell around the SWIM state machine (state.ts). It owns the clock, the
 * timers, the sockets and the node's key: it feeds the state machine time, messages and delivery
 * failures, sends what it asks, runs push-pull exchanges, and tells the node about state changes.
 *
 * Timers: one timeout, set for the state machine's next deadline (at most tickMsMax away). When it fires
 * late by more than stallThresholdMs the event loop stalled (CPU starvation, SIGSTOP, GC): the state
 * machine is told, and it extends its deadlines instead of blaming peers for its own lateness. Each tick
 * runs after the poll phase (setImmediate), so acks that arrived during a stall count before timeouts do.
 */
import { connect } from 'node:net';
import type { Connection, Libp2p, PeerId, PrivateKey } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { ShoalError, errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/log.ts';
import { systemRandom, type Random } from '../shared/random.ts';
import { callRpc, handleRpc } from '../shared/wire.ts';
import type { MembershipConfig } from './config.ts';
import { ed25519MembershipCrypto } from './crypto.ts';
import {
  classifyDialFailure,
  describeDialFailure,
  describeWrongKey,
  joinRetryDelayMs,
  needsPnetProbe,
  nextDialTimeoutMs,
  pnetProbeTimeoutMs,
  recordFailure,
  wrongKeySeeds,
  type DialFailureKind,
  type SeedFailures,
} from './join.ts';
import { swimSyncProtocol, syncReplySchema, syncRequestSchema, type SyncRequest } from './messages.ts';
import type { NodeRecord } from './records.ts';
import { MembershipState, type Member, type MemberTransition, type MembershipStats } from './state.ts';
import { SwimTransport, type TransportStats } from './transport.ts';

/** A failed attempt to join through one seed. */
interface DialFailure {
  readonly kind: DialFailureKind;
  readonly error: unknown;
}

/**
 * The longest the shell sleeps between ticks: bounds how late a stall is noticed. One probe period, so a
 * member probing every period wakes no more than it must (each wake-up costs CPU even when idle).
 */
export const tickMsMax = 200;
/** Housekeeping (connection pruning, address book, own addresses) runs this often. */
export const housekeepingIntervalMs = 1000;
/** A debug line with traffic counters is logged this often. */
export const statsLogIntervalMs = 10_000;
/** Push-pull exchanges this node runs at once; more requested meanwhile are skipped. */
export const syncsInFlightMax = 2;
/** How long a graceful leave waits for its announcement to be written before returning. */
export const leaveFlushMsMax = 1000;

export interface MembershipInit {
  readonly libp2p: Libp2p;
  /** What this node advertises; its id and addresses come from libp2p. */
  readonly self: Omit<NodeRecord, 'revision' | 'leaving' | 'id' | 'addresses'>;
  readonly config: MembershipConfig;
  readonly logger: Logger;
  readonly onTransition: (transition: MemberTransition, member: Member) => void;
  /** Hears the round trip of every direct probe answered, in ms (metrics). */
  readonly onProbeRoundTrip?: (ms: number) => void;
  /**
   * The node's libp2p key (Ed25519), to sign its records. Without it, the key is taken from the host's
   * `nodeKey` service (p2p.ts creates one).
   */
  readonly privateKey?: PrivateKey;
  /** Defaults to a source seeded by the OS. */
  readonly random?: Random;
}

export interface MembershipServiceStats extends MembershipStats, TransportStats {
  readonly localHealth: number;
  readonly members: number;
  readonly connections: number;
  readonly syncs: number;
  readonly syncFailures: number;
  /** Push-pull payload bytes sent (SWIM frames are in bytesSent). */
  readonly syncBytesSent: number;
}

export class MembershipService {
  private readonly init: MembershipInit;
  private readonly state: MembershipState;
  private readonly transport: SwimTransport;
  private timer: NodeJS.Timeout | null = null;
  private housekeepingTimer: NodeJS.Timeout | null = null;
  private expectedAtMs = 0;
  private lastStatsLogMs = 0;
  private syncsInFlight = 0;
  private syncs = 0;
  private syncFailures = 0;
  /** Push-pull payload sent (requests and replies); the transport counts SWIM frames. */
  private syncBytesSent = 0;
  private stopped = false;
  private readonly addressBook = new Map<string, string>();

  constructor(init: MembershipInit) {
    this.init = init;
    const privateKey = init.privateKey ?? nodeKeyOf(init.libp2p);
    const id = init.libp2p.peerId.toString();
    this.state = new MembershipState({
      record: { ...init.self, id, addresses: this.ownAddresses() },
      config: init.config,
      random: init.random ?? systemRandom(),
      crypto: ed25519MembershipCrypto(privateKey),
      nowMs: nowMs(),
    });
    this.transport = new SwimTransport({
      libp2p: init.libp2p,
      logger: init.logger,
      dialTimeoutMs: init.config.dialTimeoutMs,
      peerConnectionsMax: init.config.peerConnectionsMax,
      addressesOf: (peer) => this.state.addressesOf(peer),
      viaOf: (peer) => this.state.viaOf(peer),
      onMessage: (from, message) => {
        if (this.stopped || from === this.selfId) return;
        this.state.receive(from, message, nowMs());
        this.flush();
      },
      onUnreachable: (peer) => {
        if (this.stopped) return;
        this.state.unreachable(peer, nowMs());
        this.flush();
      },
      nowMs,
    });
  }

  get selfId(): string {
    return this.state.selfId;
  }

  async start(): Promise<void> {
    await this.transport.start();
    await handleRpc(this.init.libp2p, swimSyncProtocol, (request, remotePeer) => {
      const parsed = syncRequestSchema.safeParse(request);
      if (!parsed.success) throw new ShoalError('INVALID_ARGUMENT', 'malformed membership sync request');
      const reply = this.state.handleSyncRequest(remotePeer.toString(), parsed.data, nowMs());
      this.flush();
      this.syncBytesSent += jsonBytes(reply);
      return Promise.resolve(reply);
    });
    this.init.libp2p.addEventListener('peer:disconnect', (event) => {
      const peer = event.detail.toString();
      if (this.stopped || this.transport.forgetPruned(peer)) return;
      // Beyond peerConnectionsMax connections churn by design, and a closed one means nothing.
      if (this.state.memberCount() > this.init.config.peerConnectionsMax) return;
      this.state.connectionLost(peer, nowMs());
      this.flush();
    });
    this.flush();
    this.schedule();
    this.housekeepingTimer = setInterval(() => this.housekeeping(), housekeepingIntervalMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.housekeepingTimer) clearInterval(this.housekeepingTimer);
    this.transport.stop();
  }

  /**
   * Dials every seed, each on its own, until one answers, so the node learns the cluster. Rejects with
   * the wrong-key message once every seed where a shoal node answers has kept failing the handshake
   * (join.ts: in 4.5 s at most), else with the last failure after timeoutMs.
   */
  async join(seeds: readonly string[], timeoutMs: number): Promise<void> {
    if (seeds.length === 0) throw new ShoalError('INVALID_ARGUMENT', 'join needs at least one seed address');
    const deadlineMs = nowMs() + timeoutMs;
    const failures = new Map<string, SeedFailures>();
    // Written by the seeds' loops, read when all have given up.
    const outcome: { last: { seed: string; failure: DialFailure } | null; wrongKey: string[] | null } = {
      last: null,
      wrongKey: null,
    };
    // Aborted when the join is over, either way: the other seeds' dials and pauses stop with it.
    const over = new AbortController();

    const judge = (): boolean => {
      outcome.wrongKey ??= wrongKeySeeds(seeds, failures, nowMs());
      if (outcome.wrongKey !== null) over.abort();
      return over.signal.aborted;
    };

    const dialUntilJoined = async (seed: string): Promise<void> => {
      while (!judge() && nowMs() < deadlineMs) {
        const failure = await this.tryJoin(seed, failures.get(seed), deadlineMs, over.signal);
        if (failure === 'joined') {
          over.abort();
          return;
        }
        if (failure === 'cancelled' || over.signal.aborted) break;
        const previous = failures.get(seed);
        failures.set(seed, recordFailure(previous, failure.kind, nowMs()));
        outcome.last = { seed, failure };
        // Once per run of the same failure: a seed retried twice a second must not flood the log.
        if (previous?.kind !== failure.kind)
          this.init.logger.warn(describeDialFailure(seed, failure.kind, failure.error));
        if (judge()) break;
        await pause(Math.min(joinRetryDelayMs, deadlineMs - nowMs()), over.signal);
      }
      throw new Error(`stopped dialling ${seed}`);
    };

    try {
      await Promise.any(seeds.map(dialUntilJoined));
    } catch {
      const { wrongKey, last } = outcome;
      if (wrongKey !== null) throw new ShoalError('INVALID_ARGUMENT', describeWrongKey(wrongKey));
      if (last === null)
        throw new ShoalError(
          'UNAVAILABLE',
          `join ${seeds.join(', ')} failed: no dial ended within ${timeoutMs} ms`,
        );
      throw new ShoalError(
        'UNAVAILABLE',
        describeDialFailure(last.seed, last.failure.kind, last.failure.error),
      );
    } finally {
      over.abort();
    }
  }

  /** Announces a graceful leave so peers mark this node "left" rather than dead. */
  async leave(): Promise<void> {
    this.state.leave(nowMs());
    this.flush();
    // The announcement is in the streams' buffers; give it (and a gossip round or two) time to go out.
    const deadline = nowMs() + leaveFlushMsMax;
    await sleep(this.init.config.gossipIntervalMs * 2);
    while (nowMs() < deadline && this.transport.backlogBytes() > 0) await sleep(20);
  }

  /** Updates what this node advertises (e.g. driver health); peers learn it by gossip. */
  update(patch: Partial<Pick<NodeRecord, 'drivers' | 'labels' | 'cpuMillis' | 'memoryBytes'>>): void {
    this.state.updateSelf(patch);
    this.flush();
  }

  members(): Member[] {
    return this.state.list();
  }

  member(id: string): Member | undefined {
    return this.state.get(id);
  }

  /** Counters for benchmarks and debugging. */
  stats(): MembershipServiceStats {
    return {
      ...this.state.stats,
      ...this.transport.stats,
      localHealth: this.state.localHealth,
      members: this.state.memberCount(),
      connections: this.init.libp2p.getConnections().length,
      syncs: this.syncs,
      syncFailures: this.syncFailures,
      syncBytesSent: this.syncBytesSent,
    };
  }

  // ---- driving the state machine ---------------------------------------------------------------------

  private schedule(): void {
    if (this.stopped) return;
    const now = nowMs();
    const delayMs = Math.min(tickMsMax, Math.max(1, this.state.nextDeadlineMs() - now));
    this.expectedAtMs = now + delayMs;
    this.timer = setTimeout(() => this.onTimer(), delayMs);
  }

  private onTimer(): void {
    const lateMs = nowMs() - this.expectedAtMs;
    // After the poll phase: whatever arrived while this node was not running is handled first.
    setImmediate(() => {
      if (this.stopped) return;
      const now = nowMs();
      if (lateMs > this.init.config.stallThresholdMs) {
        this.init.logger.debug('event loop stalled; extending membership deadlines', { lateMs });
        this.state.noteStall(lateMs, now);
      }
      this.state.tick(now);
      this.flush();
      this.schedule();
    });
  }

  /** Carries out what the state machine asked for. */
  private flush(): void {
    for (const out of this.state.takeMessages()) this.transport.send(out.to, out.message);
    for (const peer of this.state.takeSyncs()) void this.runSync(peer);
    for (const transition of this.state.takeTransitions()) this.emit(transition);
    for (const ms of this.state.takeRoundTrips()) this.init.onProbeRoundTrip?.(ms);
  }

  private emit(transition: MemberTransition): void {
    const member = this.state.get(transition.id);
    if (!member) return;
    if (transition.id !== this.selfId) {
      if (transition.to === 'alive') this.remember(member.record);
      this.init.logger.info(`member ${member.record.name} is ${transition.to}`, {
        id: transition.id,
        address: member.record.address,
        version: `${member.stateVersion.incarnation}.${member.stateVersion.revision}`,
      });
    }
    this.init.onTransition(transition, member);
  }

  // ---- joining -------------------------------------------------------------------------------------

  /** Dials `seed` once and syncs with it: joined, cancelled (the join is over), or how it failed. */
  private async tryJoin(
    seed: string,
    failures: SeedFailures | undefined,
    deadlineMs: number,
    over: AbortSignal,
  ): Promise<DialFailure | 'joined' | 'cancelled'> {
    const timeoutMs = Math.max(1, Math.min(nextDialTimeoutMs(failures, nowMs()), deadlineMs - nowMs()));
    let connection: Connection;
    try {
      connection = await this.init.libp2p.dial(multiaddr(seed), {
        signal: AbortSignal.any([AbortSignal.timeout(timeoutMs), over]),
      });
    } catch (error) {
      if (over.aborted) return 'cancelled';
      // Neither a reset handshake nor a timeout says whether a shoal node was there (join.ts): ask it.
      const speaks = needsPnetProbe(error) && (await speaksPnet(seed, pnetProbeTimeoutMs));
      return { kind: classifyDialFailure(error, speaks), error };
    }
    if (over.aborted) return 'cancelled';
    try {
      await this.syncWith(connection.remotePeer);
      return 'joined';
    } catch (error) {
      // Connected with the right key: whatever failed after that is not the handshake.
      return { kind: 'other', error };
    }
  }

  // ---- push-pull -------------------------------------------------------------------------------------

  private async runSync(peer: string): Promise<void> {
    if (this.syncsInFlight >= syncsInFlightMax || this.stopped) return;
    let peerId: PeerId;
    try {
      // A hosted member's state is its host's to exchange.
      peerId = peerIdFromString(this.state.viaOf(peer) ?? peer);
    } catch {
      return;
    }
    this.syncsInFlight++;
    try {
      await this.syncWith(peerId);
    } catch (error) {
      this.syncFailures++;
      this.init.logger.debug('membership sync failed', { peer, error: errorMessage(error) });
    } finally {
      this.syncsInFlight--;
    }
  }

  /** A full push-pull with `peer`: digest out, newer entries and its digest back, ours to it. */
  private async syncWith(peer: PeerId): Promise<void> {
    const { libp2p, config } = this.init;
    const request = this.state.syncRequest();
    this.syncBytesSent += jsonBytes(request);
    const raw = await callRpc(libp2p, peer, swimSyncProtocol, request, config.syncTimeoutMs);
    const reply = syncReplySchema.safeParse(raw);
    if (!reply.success) throw new ShoalError('INTERNAL', 'malformed membership sync reply');
    this.syncs++;
    const back = this.state.handleSyncReply(peer.toString(), reply.data, nowMs());
    this.flush();
    if (back.length > 0) {
      const push: SyncRequest = { digest: null, entries: back };
      this.syncBytesSent += jsonBytes(push);
      await callRpc(libp2p, peer, swimSyncProtocol, push, config.syncTimeoutMs);
    }
  }

  // ---- housekeeping ----------------------------------------------------------------------------------

  private housekeeping(): void {
    if (this.stopped) return;
    this.transport.prune();
    this.state.setConnected(this.transport.connectedPeers());
    const addresses = this.ownAddresses();
    if (addresses.join(' ') !== this.state.record.addresses.join(' ')) this.state.updateSelf({ addresses });
    for (const member of this.state.list()) if (member.state !== 'left') this.remember(member.record);
    const now = nowMs();
    if (now - this.lastStatsLogMs >= statsLogIntervalMs) {
      this.lastStatsLogMs = now;
      const stats = this.stats();
      this.init.logger.debug('membership traffic', {
        bytesSent: stats.bytesSent,
        syncBytesSent: stats.syncBytesSent,
        bytesReceived: stats.bytesReceived,
        framesSent: stats.framesSent,
        framesDropped: stats.framesDropped,
        dials: stats.dials,
        syncs: stats.syncs,
        connections: stats.connections,
        members: stats.members,
        localHealth: stats.localHealth,
        refutations: stats.refutations,
        stalls: stats.stalls,
      });
    }
    this.flush();
  }

  /**
   * Puts a member's addresses in libp2p's address book, so any protocol (Raft) can dial it by id. A hosted
   * member's addresses are its host's, and go under the host's id.
   */
  private remember(record: NodeRecord): void {
    const key = record.addresses.join(' ');
    const peer = record.via ?? record.id;
    if (record.id === this.selfId || this.addressBook.get(peer) === key) return;
    this.addressBook.set(peer, key);
    try {
      const multiaddrs = record.addresses.map((address) => multiaddr(address));
      void this.init.libp2p.peerStore.merge(peerIdFromString(peer), { multiaddrs }).catch((error: unknown) =>
        this.init.logger.debug('address book update failed', {
          peer: record.name,
          error: errorMessage(error),
        }),
      );
    } catch (error) {
      this.init.logger.debug('bad addresses in a member record', {
        peer: record.name,
        error: errorMessage(error),
      });
    }
  }

  private ownAddresses(): string[] {
    return this.init.libp2p.getMultiaddrs().map((a) => a.toString());
  }
}

function nodeKeyOf(libp2p: Libp2p): PrivateKey {
  const service: unknown = libp2p.services['nodeKey'];
  if (typeof service === 'object' && service !== null && 'privateKey' in service) {
    return (service as { privateKey: PrivateKey }).privateKey;
  }
  throw new ShoalError(
    'INVALID_ARGUMENT',
    'membership needs the node key: pass privateKey, or create libp2p with the nodeKey service (p2p.ts)',
  );
}

/**
 * The state machine's clock: monotonic (a wall-clock step from NTP must not expire every suspicion at
 * once), anchored at the wall clock when the process started, so the node can still compare
 * lastHeardMs with Date.now() (they drift apart only as much as the wall clock is stepped).
 */
const clockEpochMs = Date.now() - performance.now();

function nowMs(): number {
  return Math.round(clockEpochMs + performance.now());
}

function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits `ms`, or less if `signal` aborts first. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted || ms <= 0) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

/** The nonce a pnet host sends as soon as it accepts a connection (@libp2p/pnet NONCE_LENGTH). */
const pnetNonceBytes = 24;

/**
 * True if a plain TCP connection to the seed (a /ip4, /ip6 or /dns multiaddr with /tcp) opens and the
 * other end sends a pnet nonce unasked, as every shoal node does, in time. An accepted connection alone
 * would not do: a proxy may accept connections to any address (this dev machine's does), and so
 * does an HTTP server on the API port.
 */
function speaksPnet(seed: string, timeoutMs: number): Promise<boolean> {
  let host: string | undefined;
  let port: number | undefined;
  try {
    for (const component of multiaddr(seed).getComponents()) {
      if (['ip4', 'ip6', 'dns', 'dns4', 'dns6'].includes(component.name)) host ??= component.value;
      if (component.name === 'tcp') port ??= Number(component.value);
    }
  } catch {
    return Promise.resolve(false);
  }
  if (host === undefined || port === undefined) return Promise.resolve(false);
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    let receivedBytes = 0;
    const timer = setTimeout(() => finish(false), timeoutMs);
    function finish(answered: boolean): void {
      clearTimeout(timer);
      socket.destroy();
      resolve(answered);
    }
    socket.on('data', (chunk: Buffer) => {
      receivedBytes += chunk.length;
      if (receivedBytes >= pnetNonceBytes) finish(true);
    });
    socket.once('close', () => finish(false));
    socket.once('error', () => finish(false));
  });
}
