/**
 * Membership's pure state machine: SWIM failure detection with Lifeguard's refinements, and gossip
 * dissemination. It does no I/O and reads no clock: the shell feeds it time (`nowMs`), messages and
 * delivery failures, and takes back messages to send, push-pull exchanges to run and state changes.
 *
 * Each protocol period it probes one member (round-robin over a shuffled list). No ack within the
 * probe timeout: it asks k others to probe (ping-req); still nothing: it suspects the member and says
 * so, signed. A suspect that does not refute (a newer version of its own signed record) within the
 * suspicion timeout is declared dead; the timeout shrinks as independent accusers confirm (Lifeguard).
 * A node that misses its own deadlines (no nacks from helpers, stalls, having to refute) raises its
 * local health score, which stretches its probe interval and timeouts so it accuses less.
 *
 * Updates (records, claims) ride on every probe, ack and gossip message, each sent λ·log N times; a
 * state change is pushed at once to a few members (epidemic); push-pull with a random member repairs
 * what gossip missed, and with a random dead one merges a healed partition.
 */
import { assert } from '../shared/assert.ts';
import type { Random } from '../shared/random.ts';
import {
  pushPullIntervalMs,
  retransmitLimit,
  suspicionTimeoutMs,
  suspicionTimeouts,
  validateConfig,
  type MembershipConfig,
  type SuspicionTimeouts,
} from './config.ts';
import { BroadcastQueue } from './dissemination.ts';
import type { DigestEntry, SwimMessage, SyncEntry, SyncReply, SyncRequest, Update } from './messages.ts';
import { syncEntriesMax } from './messages.ts';
import {
  compareVersions,
  isSignedBy,
  parseClaim,
  parseRecord,
  signClaim,
  signRecord,
  versionOf,
  type Claim,
  type MembershipCrypto,
  type NodeRecord,
  type Signed,
  type SignedClaim,
  type SignedRecord,
  type Version,
} from './records.ts';

export type MemberState = 'alive' | 'suspect' | 'dead' | 'left';

export interface Member {
  readonly record: NodeRecord;
  readonly state: MemberState;
  /** When this node last had evidence the member is up: a message from it, an ack, a newer record. */
  readonly lastHeardMs: number;
  /** When the member's state last changed in this node's view. */
  readonly stateChangedMs: number;
  /** The member's version the state refers to (a suspicion is about one version; a newer one refutes). */
  readonly stateVersion: Version;
}

export interface MemberTransition {
  readonly id: string;
  readonly from: MemberState | null;
  readonly to: MemberState;
}

export interface Outbound {
  readonly to: string;
  readonly message: SwimMessage;
}

export interface MembershipStats {
  messagesSent: number;
  probes: number;
  probesFailed: number;
  indirectProbes: number;
  suspicions: number;
  refutations: number;
  badSignatures: number;
  stalls: number;
}

/** Probe round trips kept between two takes (the service takes them after every message). */
export const roundTripsKeptMax = 64;
/** Helper probes (ping-reqs being served) kept at once; more are refused with a nack. */
export const helperProbesMax = 1024;
/** The shortest gap between two out-of-turn probes of one member (see connectionLost). */
export const outOfTurnProbeGapMs = 5000;

const stateRank: Record<MemberState, number> = { alive: 0, suspect: 1, dead: 2, left: 3 };

interface Suspicion {
  startMs: number;
  /** joinGraceMult if the member had just (re)started when the suspicion began, else 1. */
  readonly graceMult: number;
  readonly firstAccuser: string;
  readonly confirmations: Set<string>;
  readonly timeouts: SuspicionTimeouts;
}

interface Entry {
  signed: Signed;
  record: NodeRecord;
  state: MemberState;
  stateVersion: Version;
  /** The claim the state stands on, when suspect or dead. */
  claim: SignedClaim | null;
  suspicion: Suspicion | null;
  lastHeardMs: number;
  stateChangedMs: number;
  /** When this node first heard of the member's current incarnation (its latest start). */
  incarnationSeenMs: number;
}

interface Probe {
  readonly target: string;
  readonly seq: number;
  readonly startMs: number;
  phase: 'direct' | 'indirect';
  deadlineMs: number;
  /** Helpers asked to probe indirectly that have not answered yet. */
  readonly helpersPending: Set<string>;
  helpersAsked: number;
  nacks: number;
}

interface HelperProbe {
  readonly requester: string;
  readonly requesterSeq: number;
  readonly target: string;
  deadlineMs: number;
}

export interface MembershipStateInit {
  /** This node's record; its revision and leaving flag are managed here. */
  readonly record: Omit<NodeRecord, 'revision' | 'leaving'>;
  readonly config: MembershipConfig;
  readonly random: Random;
  readonly crypto: MembershipCrypto;
  readonly nowMs: number;
}

export class MembershipState {
  readonly selfId: string;
  readonly stats: MembershipStats = {
    messagesSent: 0,
    probes: 0,
    probesFailed: 0,
    indirectProbes: 0,
    suspicions: 0,
    refutations: 0,
    badSignatures: 0,
    stalls: 0,
  };
  private readonly config: MembershipConfig;
  private readonly random: Random;
  private readonly crypto: MembershipCrypto;
  private self: SignedRecord;
  private readonly members = new Map<string, Entry>();
  /**
   * Entries dead or left (setState keeps it), and those under suspicion: what timers look at, so that
   * neither a tick nor N (memberCount) need scan every member.
   */
  private readonly gone = new Set<Entry>();
  private readonly suspects = new Set<Entry>();
  private readonly queue = new BroadcastQueue();
  private readonly connected = new Set<string>();
  private probeOrder: string[] = [];
  private probeIndex = 0;
  private probe: Probe | null = null;
  /** Round trips of direct probes answered since the last takeRoundTrips(), in ms (metrics). */
  private roundTrips: number[] = [];
  /** Members to probe before the round-robin resumes (their connection just dropped). */
  private readonly probeFirst = new Set<string>();
  private readonly lastOutOfTurnMs = new Map<string, number>();
  private readonly helperProbes = new Map<number, HelperProbe>();
  private seq = 0;
  private health = 0;
  private nextProbeMs: number;
  private nextGossipMs: number;
  private nextPushPullMs: number;
  private nextReconnectMs: number;
  private nextReapMs: number;
  private urgent = false;
  private lastGossipMs = -Infinity;
  /** The latest time any input brought: for rate limits that need "now" outside an input's own nowMs. */
  private lastNowMs = 0;
  private outbox: Outbound[] = [];
  private syncs: string[] = [];
  private transitions: MemberTransition[] = [];

  constructor(init: MembershipStateInit) {
    validateConfig(init.config);
    this.config = init.config;
    this.random = init.random;
    this.crypto = init.crypto;
    this.selfId = init.record.id;
    this.self = signRecord({ ...init.record, revision: 0, leaving: false }, this.crypto);
    const now = init.nowMs;
    this.lastNowMs = now;
    this.members.set(this.selfId, {
      signed: this.self.signed,
      record: this.self.record,
      state: 'alive',
      stateVersion: versionOf(this.self.record),
      claim: null,
      suspicion: null,
      lastHeardMs: now,
      stateChangedMs: now,
      incarnationSeenMs: now,
    });
    this.transitions.push({ id: this.selfId, from: null, to: 'alive' });
    // Spread the first timers over a period so nodes started together do not probe in lockstep.
    this.nextProbeMs = now + this.random.int(0, this.config.probeIntervalMs);
    this.nextGossipMs = now + this.random.int(0, this.config.gossipIntervalMs);
    this.nextPushPullMs = now + this.random.int(0, this.config.pushPullIntervalMs) + 1;
    this.nextReconnectMs = now + this.config.reconnectIntervalMs;
    this.nextReapMs = now + this.config.reconnectIntervalMs;
  }

  // ---- reads -----------------------------------------------------------------------------------------

  get record(): NodeRecord {
    return this.self.record;
  }

  /** Lifeguard's local health score: 0 is healthy; timeouts and the probe interval scale by (score + 1). */
  get localHealth(): number {
    return this.health;
  }

  get(id: string): Member | undefined {
    const entry = this.members.get(id);
    return entry && toMember(entry);
  }

  list(): Member[] {
    return [...this.members.values()]
      .sort((a, b) => a.record.name.localeCompare(b.record.name) || a.record.id.localeCompare(b.record.id))
      .map(toMember);
  }

  /** Addresses to reach a member at (from its record). */
  addressesOf(id: string): readonly string[] {
    return this.members.get(id)?.record.addresses ?? [];
  }

  /** The peer that hosts a member (its signed record's `via`); undefined for a member that is its own peer. */
  viaOf(id: string): string | undefined {
    return this.members.get(id)?.record.via;
  }

  /** Members believed alive or suspect, this node included: the N of the formulas. */
  memberCount(): number {
    return this.members.size - this.gone.size;
  }

  /** When tick() next has work to do (the shell may call it earlier). */
  nextDeadlineMs(): number {
    let next = Math.min(this.nextPushPullMs, this.nextReconnectMs, this.nextReapMs);
    if (this.queue.size > 0) next = Math.min(next, this.nextGossipMs);
    next = Math.min(next, this.probe ? this.probe.deadlineMs : this.nextProbeMs);
    for (const helper of this.helperProbes.values()) next = Math.min(next, helper.deadlineMs);
    for (const entry of this.suspects) {
      if (entry.suspicion) next = Math.min(next, this.suspicionDeadline(entry.suspicion));
    }
    return next;
  }

  // ---- outputs ---------------------------------------------------------------------------------------

  takeMessages(): Outbound[] {
    const out = this.outbox;
    this.outbox = [];
    return out;
  }

  /** Members the state machine wants a push-pull exchange with (see syncRequest). */
  takeSyncs(): string[] {
    const out = this.syncs;
    this.syncs = [];
    return out;
  }

  /** The round trips of the direct probes answered since the last call, in ms; at most roundTripsKeptMax. */
  takeRoundTrips(): number[] {
    const taken = this.roundTrips;
    this.roundTrips = [];
    return taken;
  }

  takeTransitions(): MemberTransition[] {
    const out = this.transitions;
    this.transitions = [];
    return out;
  }

  // ---- inputs ----------------------------------------------------------------------------------------

  /** Which members the shell holds a connection to: gossip prefers them (no dial needed). */
  setConnected(ids: Iterable<string>): void {
    this.connected.clear();
    for (const id of ids) this.connected.add(id);
  }

  tick(nowMs: number): void {
    this.lastNowMs = Math.max(this.lastNowMs, nowMs);
    this.expireSuspicions(nowMs);
    this.expireHelperProbes(nowMs);
    if (!this.self.record.leaving) {
      this.advanceProbe(nowMs);
      if (!this.probe && (nowMs >= this.nextProbeMs || this.probeFirst.size > 0)) this.startProbe(nowMs);
    }
    if (nowMs >= this.nextGossipMs) {
      this.gossipRound();
      this.nextGossipMs = nowMs + this.config.gossipIntervalMs;
    }
    if (nowMs >= this.nextPushPullMs) {
      this.nextPushPullMs = nowMs + pushPullIntervalMs(this.config, this.memberCount());
      const peer = this.pick(1, (entry) => entry.state === 'alive', false)[0];
      if (peer !== undefined && !this.self.record.leaving) this.syncs.push(peer);
    }
    if (nowMs >= this.nextReconnectMs) {
      this.nextReconnectMs = nowMs + this.config.reconnectIntervalMs;
      const dead = [...this.gone].filter((entry) => entry.state === 'dead').map((entry) => entry.record.id);
      const peer = this.sample(dead, 1)[0];
      if (peer !== undefined && !this.self.record.leaving) this.syncs.push(peer);
    }
    if (nowMs >= this.nextReapMs) {
      this.nextReapMs = nowMs + this.config.reconnectIntervalMs;
      this.reap(nowMs);
    }
    this.flushUrgent();
  }

  receive(from: string, message: SwimMessage, nowMs: number): void {
    this.lastNowMs = Math.max(this.lastNowMs, nowMs);
    assert(from !== this.selfId, 'a message from ourselves');
    const sender = this.members.get(from);
    if (sender) sender.lastHeardMs = nowMs;
    for (const update of message.updates) this.applyUpdate(update, nowMs, false);
    switch (message.type) {
      case 'ping':
        // A ping meant for a previous owner of this address is not ours to answer.
        if (message.target === this.selfId) this.send(from, { type: 'ack', seq: message.seq, updates: [] });
        break;
      case 'ack':
        this.onAck(from, message.seq, nowMs);
        break;
      case 'nack':
        this.onNack(from, message.seq, nowMs);
        break;
      case 'pingReq':
        this.onPingReq(from, message.seq, message.target, nowMs);
        break;
      case 'gossip':
        break;
    }
    this.flushUrgent();
  }

  /** The shell could not reach `peer` (dial refused or timed out, stream broken): fail fast. */
  unreachable(peer: string, nowMs: number): void {
    this.lastNowMs = Math.max(this.lastNowMs, nowMs);
    const probe = this.probe;
    if (probe?.target === peer && probe.phase === 'direct') this.goIndirect(probe, nowMs);
    for (const [seq, helper] of this.helperProbes) {
      if (helper.target !== peer) continue;
      this.helperProbes.delete(seq);
      this.send(helper.requester, { type: 'nack', seq: helper.requesterSeq, updates: [] });
    }
    this.flushUrgent();
  }

  /**
   * The shell's connection to `peer` closed without this node closing it. A crashed process resets its
   * connections, so this is a strong hint: probe it now, out of turn, instead of within the next round
   * (with N members, a node probes a given member once every N periods). Everything else is as for any
   * probe (indirect probes, suspicion, refutation), so a wrong hint costs one probe. At most one such
   * probe per member per outOfTurnProbeGapMs.
   */
  connectionLost(peer: string, nowMs: number): void {
    this.lastNowMs = Math.max(this.lastNowMs, nowMs);
    const entry = this.members.get(peer);
    if (!entry || !isProbeable(entry) || peer === this.selfId || this.self.record.leaving) return;
    const last = this.lastOutOfTurnMs.get(peer);
    if (last !== undefined && nowMs - last < outOfTurnProbeGapMs) return;
    this.lastOutOfTurnMs.set(peer, nowMs);
    this.probeFirst.add(peer);
    if (!this.probe) this.startProbe(nowMs);
    this.flushUrgent();
  }

  /**
   * The shell's event loop stalled for `stallMs` (CPU starvation, SIGSTOP, a long GC). What this node
   * would have received meanwhile is still in its socket buffers, so its own deadlines prove nothing:
   * they are pushed back by the stall, and local health drops (Lifeguard) so it probes more gently.
   */
  noteStall(stallMs: number, nowMs: number): void {
    this.lastNowMs = Math.max(this.lastNowMs, nowMs);
    assert(stallMs >= 0, 'a negative stall');
    this.stats.stalls++;
    this.adjustHealth(1 + Math.floor(stallMs / this.config.probeTimeoutMs));
    if (this.probe) this.probe.deadlineMs = Math.max(this.probe.deadlineMs + stallMs, nowMs);
    for (const helper of this.helperProbes.values()) helper.deadlineMs += stallMs;
    for (const entry of this.suspects) if (entry.suspicion) entry.suspicion.startMs += stallMs;
  }

  /** Changes what this node advertises; peers learn it by gossip. */
  updateSelf(
    patch: Partial<Pick<NodeRecord, 'drivers' | 'labels' | 'cpuMillis' | 'memoryBytes' | 'addresses'>>,
  ): void {
    if (this.self.record.leaving) return;
    const next = { ...this.self.record, ...patch };
    if (JSON.stringify(next) === JSON.stringify(this.self.record)) return;
    this.replaceSelf({ ...next, revision: this.self.record.revision + 1 });
  }

  /**
   * Announces a graceful leave: a record marked leaving, pushed at once to every member this node is
   * connected to and to a few more. Probing stops; the node keeps answering until the shell stops it.
   */
  leave(nowMs: number): void {
    this.lastNowMs = Math.max(this.lastNowMs, nowMs);
    if (this.self.record.leaving) return;
    this.replaceSelf({ ...this.self.record, revision: this.self.record.revision + 1, leaving: true });
    this.setState(this.mustEntry(this.selfId), 'left', nowMs);
    this.probe = null;
    this.announceSelf();
    this.flushUrgent();
  }

  /**
   * For simulations only (simulation.ts startConverged): puts this node in a cluster that converged long
   * ago, which N joins cannot build for N in the thousands (every member gossips every joiner's record
   * λ·log N times). Each record becomes an alive member known since before joinGraceMs: no signature
   * check (the simulation signed them), no transition, nothing gossiped. The probe order is reshuffled
   * at the next probe, and the push-pull timer put at a random point of its full interval, as in a
   * cluster that has run for a while. A real node learns members only by joining and gossip.
   */
  adoptConvergedView(records: readonly SignedRecord[], nowMs: number): void {
    for (const { signed, record } of records) {
      if (record.id === this.selfId || this.members.has(record.id)) continue;
      if (this.members.size >= this.config.membersMax) break;
      this.members.set(record.id, {
        signed,
        record,
        state: 'alive',
        stateVersion: versionOf(record),
        claim: null,
        suspicion: null,
        lastHeardMs: nowMs,
        stateChangedMs: nowMs,
        incarnationSeenMs: nowMs - this.config.joinGraceMs,
      });
    }
    this.probeOrder = [];
    this.probeIndex = 0;
    this.nextPushPullMs = nowMs + this.random.int(0, pushPullIntervalMs(this.config, this.memberCount())) + 1;
  }

  // ---- push-pull -------------------------------------------------------------------------------------

  /** The first leg of a push-pull: this node's digest (and its own record, so a seed learns a joiner). */
  syncRequest(): SyncRequest {
    return { digest: this.digest(), entries: [{ record: this.self.signed, claim: null }] };
  }

  /** Serves a push-pull leg from `from`: merges what it sent, answers with what is newer here. */
  handleSyncRequest(from: string, request: SyncRequest, nowMs: number): SyncReply {
    this.lastNowMs = Math.max(this.lastNowMs, nowMs);
    const sender = this.members.get(from);
    if (sender) sender.lastHeardMs = nowMs;
    this.mergeEntries(request.entries, nowMs);
    let reply: SyncReply = { digest: null, entries: [] };
    if (request.digest !== null) {
      this.refuteFromDigest(request.digest);
      // Our digest is for the caller to send back what it holds newer. When neither side holds anything
      // newer (the steady state), the reply is empty, digest included (it asks for no last leg), which
      // halves the exchange. Entries in the reply may make the caller refute: then it gets our digest.
      const entries = this.entriesNewerThan(request.digest);
      const same = entries.length === 0 && this.holdsNothingNewer(request.digest);
      reply = { digest: same ? null : this.digest(), entries };
    }
    this.flushUrgent();
    return reply;
  }

  /** Takes the callee's answer; returns the entries to send back (the last leg), if any. */
  handleSyncReply(from: string, reply: SyncReply, nowMs: number): SyncEntry[] {
    this.lastNowMs = Math.max(this.lastNowMs, nowMs);
    const sender = this.members.get(from);
    if (sender) sender.lastHeardMs = nowMs;
    this.mergeEntries(reply.entries, nowMs);
    let back: SyncEntry[] = [];
    if (reply.digest !== null) {
      this.refuteFromDigest(reply.digest);
      back = this.entriesNewerThan(reply.digest);
    }
    this.flushUrgent();
    return back;
  }

  // ---- probing ---------------------------------------------------------------------------------------

  private scaled(ms: number): number {
    return ms * (this.health + 1);
  }

  private startProbe(nowMs: number): void {
    const target = this.outOfTurnTarget() ?? this.nextProbeTarget();
    if (target === null) {
      this.nextProbeMs = nowMs + this.config.probeIntervalMs;
      return;
    }
    this.stats.probes++;
    const seq = this.nextSeq();
    this.probe = {
      target,
      seq,
      startMs: nowMs,
      phase: 'direct',
      deadlineMs: nowMs + this.scaled(this.config.probeTimeoutMs),
      helpersPending: new Set(),
      helpersAsked: 0,
      nacks: 0,
    };
    this.send(target, { type: 'ping', seq, target, updates: [] });
  }

  private advanceProbe(nowMs: number): void {
    const probe = this.probe;
    if (!probe || nowMs < probe.deadlineMs) return;
    if (probe.phase === 'direct') this.goIndirect(probe, nowMs);
    else this.probeFailed(probe, nowMs);
  }

  private goIndirect(probe: Probe, nowMs: number): void {
    probe.phase = 'indirect';
    probe.deadlineMs = nowMs + this.scaled(this.config.indirectProbeTimeoutMs);
    const helpers = this.pick(
      this.config.indirectChecks,
      (entry) => entry.state === 'alive' && entry.record.id !== probe.target,
      true,
    );
    this.stats.indirectProbes++;
    for (const helper of helpers) {
      probe.helpersPending.add(helper);
      this.send(helper, { type: 'pingReq', seq: probe.seq, target: probe.target, updates: [] });
    }
    probe.helpersAsked = helpers.length;
  }

  private onAck(from: string, seq: number, nowMs: number): void {
    const probe = this.probe;
    if (probe?.seq === seq && (from === probe.target || probe.helpersPending.has(from))) {
      // A direct answer times the round trip (an indirect one also times the helpers).
      if (from === probe.target && probe.phase === 'direct' && this.roundTrips.length < roundTripsKeptMax)
        this.roundTrips.push(nowMs - probe.startMs);
      const target = this.members.get(probe.target);
      if (target) target.lastHeardMs = nowMs;
      this.adjustHealth(-1);
      this.finishProbe(probe, nowMs);
      return;
    }
    const helper = this.helperProbes.get(seq);
    if (helper && helper.target === from) {
      this.helperProbes.delete(seq);
      this.send(helper.requester, { type: 'ack', seq: helper.requesterSeq, updates: [] });
    }
  }

  private onNack(from: string, seq: number, nowMs: number): void {
    const probe = this.probe;
    if (probe?.seq !== seq || !probe.helpersPending.delete(from)) return;
    probe.nacks++;
    // Every helper tried and failed: no reason to wait out the deadline.
    if (probe.phase === 'indirect' && probe.helpersPending.size === 0) this.probeFailed(probe, nowMs);
  }

  private onPingReq(from: string, seq: number, target: string, nowMs: number): void {
    if (target === this.selfId) {
      this.send(from, { type: 'ack', seq, updates: [] });
      return;
    }
    if (this.helperProbes.size >= helperProbesMax || !this.members.has(target)) {
      this.send(from, { type: 'nack', seq, updates: [] });
      return;
    }
    const ownSeq = this.nextSeq();
    this.helperProbes.set(ownSeq, {
      requester: from,
      requesterSeq: seq,
      target,
      deadlineMs: nowMs + this.scaled(this.config.probeTimeoutMs),
    });
    this.send(target, { type: 'ping', seq: ownSeq, target, updates: [] });
  }

  private expireHelperProbes(nowMs: number): void {
    for (const [seq, helper] of this.helperProbes) {
      if (nowMs < helper.deadlineMs) continue;
      this.helperProbes.delete(seq);
      this.send(helper.requester, { type: 'nack', seq: helper.requesterSeq, updates: [] });
    }
  }

  private probeFailed(probe: Probe, nowMs: number): void {
    this.stats.probesFailed++;
    // Lifeguard: helpers that did not even nack suggest the problem is here, not at the target.
    const missedNacks = probe.helpersAsked > 0 ? probe.helpersAsked - probe.nacks : 1;
    this.adjustHealth(missedNacks);
    this.finishProbe(probe, nowMs);
    this.accuse(probe.target, nowMs);
  }

  private finishProbe(probe: Probe, nowMs: number): void {
    if (this.probe !== probe) return;
    this.probe = null;
    this.nextProbeMs = Math.max(nowMs, probe.startMs + this.scaled(this.config.probeIntervalMs));
  }

  private outOfTurnTarget(): string | null {
    for (const id of this.probeFirst) {
      this.probeFirst.delete(id);
      const entry = this.members.get(id);
      if (entry && isProbeable(entry)) return id;
    }
    return null;
  }

  private nextProbeTarget(): string | null {
    for (let attempts = 0; attempts <= this.probeOrder.length + 1; attempts++) {
      if (this.probeIndex >= this.probeOrder.length) {
        this.probeOrder = this.shuffle(
          [...this.members.values()].filter((e) => isProbeable(e) && e.record.id !== this.selfId),
        ).map((e) => e.record.id);
        this.probeIndex = 0;
        if (this.probeOrder.length === 0) return null;
      }
      const id = this.probeOrder[this.probeIndex++];
      const entry = id === undefined ? undefined : this.members.get(id);
      if (entry && isProbeable(entry) && id !== undefined) return id;
    }
    return null;
  }

  /** A new member is probed within the current round, at a random place (as memberlist does). */
  private addToProbeOrder(id: string): void {
    const at = this.random.int(this.probeIndex, this.probeOrder.length + 1);
    this.probeOrder.splice(at, 0, id);
  }

  private adjustHealth(delta: number): void {
    this.health = Math.min(this.config.localHealthMax, Math.max(0, this.health + delta));
  }

  // ---- suspicion -------------------------------------------------------------------------------------

  /** This node's own probe of `id` failed: suspect it, or confirm an existing suspicion. */
  private accuse(id: string, nowMs: number): void {
    const entry = this.members.get(id);
    if (!entry) return;
    if (entry.state === 'alive') {
      const claim = this.ownClaim('suspect', entry, maxVersion(entry.stateVersion, versionOf(entry.record)));
      this.startSuspicion(entry, claim, nowMs);
    } else if (entry.state === 'suspect' && entry.suspicion) {
      const suspicion = entry.suspicion;
      if (suspicion.firstAccuser === this.selfId || suspicion.confirmations.has(this.selfId)) return;
      suspicion.confirmations.add(this.selfId);
      const claim = this.ownClaim('suspect', entry, entry.stateVersion);
      entry.claim = claim;
      this.broadcast(id, { type: 'claim', signed: claim.signed }, false);
    }
  }

  /**
   * When a suspicion expires. Stretched like the probe timeouts by (localHealth + 1): a node that knows
   * it is slow (stalls, missed nacks, having had to refute) gives others longer before declaring them
   * dead, since its own lateness may be what made them look silent.
   */
  private suspicionDeadline(suspicion: Suspicion): number {
    const timeoutMs = suspicionTimeoutMs(suspicion.timeouts, suspicion.confirmations.size);
    return suspicion.startMs + this.scaled(timeoutMs) * suspicion.graceMult;
  }

  private startSuspicion(entry: Entry, claim: SignedClaim, nowMs: number): void {
    this.stats.suspicions++;
    entry.stateVersion = versionOf(claim.claim);
    entry.claim = claim;
    const justStarted = nowMs - entry.incarnationSeenMs < this.config.joinGraceMs;
    entry.suspicion = {
      startMs: nowMs,
      graceMult: justStarted ? this.config.joinGraceMult : 1,
      firstAccuser: claim.claim.from,
      confirmations: new Set(),
      timeouts: suspicionTimeouts(this.config, this.memberCount()),
    };
    this.suspects.add(entry);
    this.setState(entry, 'suspect', nowMs);
    this.broadcast(entry.record.id, { type: 'claim', signed: claim.signed }, true);
  }

  private expireSuspicions(nowMs: number): void {
    if (this.suspects.size === 0) return;
    for (const entry of this.suspects) {
      if (!entry.suspicion || nowMs < this.suspicionDeadline(entry.suspicion)) continue;
      this.declareDead(entry, this.ownClaim('dead', entry, entry.stateVersion), nowMs);
    }
  }

  private declareDead(entry: Entry, claim: SignedClaim, nowMs: number): void {
    entry.stateVersion = versionOf(claim.claim);
    entry.claim = claim;
    entry.suspicion = null;
    this.suspects.delete(entry);
    this.setState(entry, 'dead', nowMs);
    this.broadcast(entry.record.id, { type: 'claim', signed: claim.signed }, true);
  }

  private ownClaim(kind: Claim['kind'], entry: Entry, version: Version): SignedClaim {
    return signClaim(
      {
        kind,
        subject: entry.record.id,
        incarnation: version.incarnation,
        revision: version.revision,
        from: this.selfId,
      },
      this.crypto,
    );
  }

  /** Someone believes this node suspect or dead at `version`: outrank it with a newer record. */
  private refute(version: Version): void {
    const own = this.self.record;
    if (own.leaving || version.incarnation !== own.incarnation) return;
    if (compareVersions(version, own) < 0) return;
    this.stats.refutations++;
    // Lifeguard: being suspected hints that this node is the slow one.
    this.adjustHealth(1);
    this.replaceSelf({ ...own, revision: version.revision + 1 });
    // The refutation must outrun the suspicion's timeout on every member, and epidemic hops each wait
    // for a (possibly busy) event loop: it goes straight to every member this node is connected to.
    this.announceSelf();
  }

  /** Sends this node's record at once to every connected member, and to a few more. */
  private announceSelf(): void {
    const targets = new Set(this.pick(this.config.gossipFanout, isReachable, true));
    for (const id of this.connected) {
      const entry = this.members.get(id);
      if (entry && isReachable(entry)) targets.add(id);
    }
    for (const to of targets) {
      this.emit(to, { type: 'gossip', updates: [{ type: 'record', signed: this.self.signed }] });
    }
  }

  private replaceSelf(record: NodeRecord): void {
    this.self = signRecord(record, this.crypto);
    const entry = this.mustEntry(this.selfId);
    entry.signed = this.self.signed;
    entry.record = this.self.record;
    entry.stateVersion = versionOf(record);
    this.broadcast(this.selfId, { type: 'record', signed: this.self.signed }, true);
  }

  private refuteFromDigest(digest: readonly DigestEntry[]): void {
    for (const [id, , , rank, incarnation, revision] of digest) {
      if (id === this.selfId && (rank === stateRank.suspect || rank === stateRank.dead))
        this.refute({ incarnation, revision });
    }
  }

  // ---- updates ---------------------------------------------------------------------------------------

  private applyUpdate(update: Update, nowMs: number, viaSync: boolean): void {
    if (update.type === 'record') this.applyRecord(update.signed, nowMs);
    else this.applyClaim(update.signed, nowMs, viaSync);
  }

  private applyRecord(signed: Signed, nowMs: number): void {
    const existing = this.members.get(recordIdHint(signed) ?? '');
    if (existing?.signed.signature === signed.signature) return; // an echo: the cheap, common case
    const record = parseRecord(signed);
    if (record === null || record.id === this.selfId) return;
    const entry = this.members.get(record.id);
    if (entry && compareVersions(record, entry.record) <= 0) return;
    if (!entry && (record.leaving || this.members.size >= this.config.membersMax)) return;
    if (!isSignedBy(signed, record.id, this.crypto)) {
      this.stats.badSignatures++;
      return;
    }
    const version = versionOf(record);
    if (!entry) {
      this.members.set(record.id, {
        signed,
        record,
        state: 'alive',
        stateVersion: version,
        claim: null,
        suspicion: null,
        lastHeardMs: nowMs,
        stateChangedMs: nowMs,
        incarnationSeenMs: nowMs,
      });
      this.transitions.push({ id: record.id, from: null, to: 'alive' });
      this.addToProbeOrder(record.id);
      this.broadcast(record.id, { type: 'record', signed }, true);
      return;
    }
    if (record.incarnation > entry.record.incarnation) entry.incarnationSeenMs = nowMs;
    entry.signed = signed;
    entry.record = record;
    entry.lastHeardMs = nowMs;
    let changed = false;
    if (compareVersions(version, entry.stateVersion) > 0) {
      entry.stateVersion = version;
      entry.claim = null;
      entry.suspicion = null;
      this.suspects.delete(entry);
      const next: MemberState = record.leaving ? 'left' : 'alive';
      changed = entry.state !== next;
      if (changed && entry.state === 'dead') this.addToProbeOrder(record.id);
      this.setState(entry, next, nowMs);
    }
    this.broadcast(record.id, { type: 'record', signed }, changed);
  }

  private applyClaim(signed: Signed, nowMs: number, viaSync: boolean): void {
    const claim = parseClaim(signed);
    if (claim === null) return;
    if (claim.subject === this.selfId) {
      // Refuting costs one signature and is harmless, so the claim's own signature is not checked.
      this.refute(claim);
      return;
    }
    const entry = this.members.get(claim.subject);
    if (!entry || entry.claim?.signed.signature === signed.signature) return;
    if (claim.from !== this.selfId && !this.members.has(claim.from)) return;
    const version = versionOf(claim);
    if (compareVersions(version, entry.record) < 0 || compareVersions(version, entry.stateVersion) < 0)
      return;
    const verified = (): boolean => {
      if (isSignedBy(signed, claim.from, this.crypto)) return true;
      this.stats.badSignatures++;
      return false;
    };
    const newer = compareVersions(version, entry.stateVersion) > 0;
    switch (entry.state) {
      case 'left':
        return;
      case 'dead':
        if (claim.kind === 'dead' && newer && verified()) {
          entry.stateVersion = version;
          entry.claim = { signed, claim };
        }
        return;
      case 'alive':
        if (claim.kind === 'dead' && !viaSync) {
          if (verified()) this.declareDead(entry, { signed, claim }, nowMs);
        } else if (claim.kind === 'dead') {
          // A peer's "dead" in a push-pull only makes this node suspect, so the member gets its chance
          // to refute (memberlist does the same); the accusation is then this node's own.
          if (verified()) this.startSuspicion(entry, this.ownClaim('suspect', entry, version), nowMs);
        } else if (verified()) {
          this.startSuspicion(entry, { signed, claim }, nowMs);
        }
        return;
      case 'suspect': {
        if (claim.kind === 'dead' && !viaSync) {
          if (verified()) this.declareDead(entry, { signed, claim }, nowMs);
          return;
        }
        if (newer) {
          if (verified()) {
            const own = claim.kind === 'dead' ? this.ownClaim('suspect', entry, version) : { signed, claim };
            this.startSuspicion(entry, own, nowMs);
          }
          return;
        }
        const suspicion = entry.suspicion;
        if (!suspicion || suspicion.firstAccuser === claim.from || suspicion.confirmations.has(claim.from))
          return;
        if (!verified()) return;
        // An independent confirmation: the timeout shrinks (Lifeguard), and others should hear it too.
        suspicion.confirmations.add(claim.from);
        if (claim.kind === 'suspect') {
          entry.claim = { signed, claim };
          this.broadcast(entry.record.id, { type: 'claim', signed }, false);
        }
        return;
      }
    }
  }

  private mergeEntries(entries: readonly SyncEntry[], nowMs: number): void {
    for (const item of entries.slice(0, syncEntriesMax)) {
      const id = recordIdHint(item.record);
      const known = id !== null && this.members.has(id);
      const claim = item.claim === null ? null : parseClaim(item.claim);
      // Like memberlist, a joiner does not learn members that are already gone.
      if (!known && claim?.kind === 'dead') continue;
      this.applyRecord(item.record, nowMs);
      if (item.claim !== null) this.applyClaim(item.claim, nowMs, true);
    }
  }

  /**
   * Whether a peer with this digest would find nothing to send back against ours (entriesNewerThan on
   * its side): it lists no member we do not know (bar dead or left ones, which it would not send), and
   * no record or state newer than ours.
   */
  private holdsNothingNewer(digest: readonly DigestEntry[]): boolean {
    for (const [id, incarnation, revision, rank, stateIncarnation, stateRevision] of digest) {
      const entry = this.members.get(id);
      if (!entry) {
        if (rank >= stateRank.dead) continue;
        return false;
      }
      if (compareVersions({ incarnation, revision }, entry.record) > 0) return false;
      const state = compareVersions(
        { incarnation: stateIncarnation, revision: stateRevision },
        entry.stateVersion,
      );
      if (state > 0 || (state === 0 && rank > stateRank[entry.state])) return false;
    }
    return true;
  }

  private digest(): DigestEntry[] {
    return [...this.members.values()].map((entry) => [
      entry.record.id,
      entry.record.incarnation,
      entry.record.revision,
      stateRank[entry.state],
      entry.stateVersion.incarnation,
      entry.stateVersion.revision,
    ]);
  }

  private entriesNewerThan(digest: readonly DigestEntry[]): SyncEntry[] {
    const theirs = new Map<string, DigestEntry>();
    for (const item of digest) theirs.set(item[0], item);
    const out: SyncEntry[] = [];
    for (const entry of this.members.values()) {
      if (out.length >= syncEntriesMax) break;
      const other = theirs.get(entry.record.id);
      if (other) {
        const [, incarnation, revision, rank, stateIncarnation, stateRevision] = other;
        const recordNewer = compareVersions(entry.record, { incarnation, revision }) > 0;
        const stateNewer =
          compareVersions(entry.stateVersion, { incarnation: stateIncarnation, revision: stateRevision }) >
            0 ||
          (compareVersions(entry.stateVersion, { incarnation: stateIncarnation, revision: stateRevision }) ===
            0 &&
            stateRank[entry.state] > rank);
        if (!recordNewer && !stateNewer) continue;
      } else if (entry.state === 'dead' || entry.state === 'left') {
        continue;
      }
      const claim =
        entry.state === 'suspect' || entry.state === 'dead' ? (entry.claim?.signed ?? null) : null;
      out.push({ record: entry.signed, claim });
    }
    return out;
  }

  // ---- dissemination ---------------------------------------------------------------------------------

  private broadcast(subject: string, update: Update, urgent: boolean): void {
    this.queue.enqueue(subject, update);
    if (urgent) this.urgent = true;
  }

  /**
   * A state change goes out at once to a few members, not at the next gossip tick: epidemic speed. If a
   * round went out within urgentGossipGapMs, the change waits for the next tick (at most that long),
   * batched with whatever else changed meanwhile.
   */
  private flushUrgent(): void {
    if (!this.urgent) return;
    if (this.lastNowMs - this.lastGossipMs < this.config.urgentGossipGapMs) {
      this.nextGossipMs = Math.min(this.nextGossipMs, this.lastGossipMs + this.config.urgentGossipGapMs);
      return;
    }
    this.urgent = false;
    this.gossipRound();
  }

  private gossipRound(): void {
    this.lastGossipMs = this.lastNowMs;
    this.urgent = false;
    if (this.queue.size === 0) return;
    for (const to of this.pick(this.config.gossipFanout, isReachable, true)) {
      const updates = this.piggyback(to);
      if (updates.length > 0) this.emit(to, { type: 'gossip', updates });
    }
  }

  /** Queues a message, with updates piggybacked. */
  private send(to: string, message: SwimMessage): void {
    const updates = this.piggyback(to);
    this.emit(to, { ...message, updates });
  }

  private emit(to: string, message: SwimMessage): void {
    this.stats.messagesSent++;
    this.outbox.push({ to, message });
  }

  /**
   * Updates for a message to `to`: first what this node holds against `to` itself (so it can refute at
   * once: Lifeguard's "buddy system"), then the queue's least-sent items.
   */
  private piggyback(to: string): Update[] {
    const updates: Update[] = [];
    let skip: Set<string> | undefined;
    let bytes = 0;
    const target = this.members.get(to);
    if (target?.claim && (target.state === 'suspect' || target.state === 'dead')) {
      const update: Update = { type: 'claim', signed: target.claim.signed };
      updates.push(update);
      bytes += target.claim.signed.body.length + target.claim.signed.signature.length + 64;
      skip = new Set([to]);
    }
    const limit = retransmitLimit(this.config, this.memberCount());
    updates.push(
      ...this.queue.take(
        this.config.updatesPerMessageMax - updates.length,
        this.config.updateBytesPerMessageMax - bytes,
        limit,
        skip,
      ),
    );
    return updates;
  }

  // ---- helpers ---------------------------------------------------------------------------------------

  private setState(entry: Entry, state: MemberState, nowMs: number): void {
    if (entry.state === state) return;
    this.transitions.push({ id: entry.record.id, from: entry.state, to: state });
    if (state === 'dead' || state === 'left') this.gone.add(entry);
    else this.gone.delete(entry);
    entry.state = state;
    entry.stateChangedMs = nowMs;
  }

  /** Dead and left members are forgotten after the retention time. */
  private reap(nowMs: number): void {
    for (const entry of this.gone) {
      const id = entry.record.id;
      if (id === this.selfId || nowMs - entry.stateChangedMs < this.config.deadMemberRetentionMs) continue;
      this.gone.delete(entry);
      this.members.delete(id);
      this.queue.drop(id);
      this.lastOutOfTurnMs.delete(id);
    }
  }

  /** Up to `count` random members (not this node) matching `filter`, connected ones first if asked. */
  private pick(count: number, filter: (entry: Entry) => boolean, preferConnected: boolean): string[] {
    // The connected ones first (at most peerConnectionsMax), so gossip does not scan every member.
    if (preferConnected) {
      const connected: string[] = [];
      for (const id of this.connected) {
        const entry = this.members.get(id);
        if (entry && id !== this.selfId && filter(entry)) connected.push(id);
      }
      if (connected.length >= count) return this.sample(connected, count);
    }
    const candidates: string[] = [];
    for (const entry of this.members.values()) {
      if (entry.record.id !== this.selfId && filter(entry)) candidates.push(entry.record.id);
    }
    return this.sample(candidates, count);
  }

  /** `count` random items of `items` (fewer if it has fewer), shuffling only as far as needed. */
  private sample<T>(items: T[], count: number): T[] {
    const taken = Math.min(count, items.length);
    for (let i = 0; i < taken; i++) {
      const j = this.random.int(i, items.length);
      const a = items[i] as T;
      items[i] = items[j] as T;
      items[j] = a;
    }
    return items.slice(0, taken);
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

  private nextSeq(): number {
    this.seq = (this.seq + 1) % Number.MAX_SAFE_INTEGER;
    return this.seq;
  }

  private mustEntry(id: string): Entry {
    const entry = this.members.get(id);
    assert(entry, `no member ${id}`);
    return entry;
  }
}

function toMember(entry: Entry): Member {
  return {
    record: entry.record,
    state: entry.state,
    lastHeardMs: entry.lastHeardMs,
    stateChangedMs: entry.stateChangedMs,
    stateVersion: entry.stateVersion,
  };
}

function isProbeable(entry: Entry): boolean {
  return entry.state === 'alive' || entry.state === 'suspect';
}

function isReachable(entry: Entry): boolean {
  return entry.state === 'alive' || entry.state === 'suspect';
}

function maxVersion(a: Version, b: Version): Version {
  return compareVersions(a, b) >= 0 ? a : b;
}

/** The record's id without a full parse, to find the member whose copy it may duplicate. */
function recordIdHint(signed: Signed): string | null {
  const match = /^\{"id":"([^"]{1,128})"/.exec(signed.body);
  return match?.[1] ?? null;
}
