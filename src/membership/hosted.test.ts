/**
 * Members hosted by one peer (the fleet simulator's): what they answer, how they refute, what they offer
 * in push-pull, and, against real MembershipState machines with messages routed as the transport routes
 * them, that real nodes learn them, keep them alive, find a crashed one, and reach each other through them.
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../shared/random.ts';
import { defaultMembershipConfig, type MembershipConfig } from './config.ts';
import { ed25519MembershipCrypto } from './crypto.ts';
import { HostedMembers, hostedProbeTimeoutMs, refutationRetransmits, type HostedOutgoing } from './hosted.ts';
import {
  swimMessageSchema,
  syncReplySchema,
  syncRequestSchema,
  type SwimMessage,
  type SyncEntry,
  type Update,
} from './messages.ts';
import {
  isSignedBy,
  parseRecord,
  signClaim,
  signRecord,
  type Claim,
  type MembershipCrypto,
  type NodeRecord,
  type Signed,
} from './records.ts';
import { MembershipState, type MemberState } from './state.ts';

interface Identity {
  readonly id: string;
  readonly crypto: MembershipCrypto;
}

async function identity(): Promise<Identity> {
  const key = await generateKeyPair('Ed25519');
  return { id: peerIdFromPrivateKey(key).toString(), crypto: ed25519MembershipCrypto(key) };
}

const host = await identity();
const m1 = await identity();
const m2 = await identity();
const m3 = await identity();
const r1 = await identity();
const r2 = await identity();
/** Checks signatures only (the key it signs with is irrelevant). */
const verifier = r1.crypto;

function baseRecord(id: string): Omit<NodeRecord, 'via'> {
  return {
    id,
    name: id.slice(-8),
    addresses: [`/ip4/127.0.0.1/tcp/4001/p2p/${id}`],
    address: '127.0.0.1:4001',
    cpuMillis: 1000,
    memoryBytes: 1 << 30,
    labels: {},
    drivers: ['exec'],
    version: 'test',
    incarnation: 1,
    revision: 0,
    leaving: false,
  };
}

/** A host of m1, m2 and m3. */
function fleet(): HostedMembers {
  const hosted = new HostedMembers(host.id);
  for (const member of [m1, m2, m3]) hosted.add(baseRecord(member.id), member.crypto);
  return hosted;
}

function realRecord(member: Identity, extra: Partial<NodeRecord> = {}): Signed {
  return signRecord({ ...baseRecord(member.id), ...extra }, member.crypto).signed;
}

function claim(kind: Claim['kind'], subject: string, by: Identity, incarnation = 1, revision = 0): Signed {
  return signClaim({ kind, subject, from: by.id, incarnation, revision }, by.crypto).signed;
}

/** A host that knows r1 and r2 (as it would after a push-pull with them). */
function fleetKnowingReals(): HostedMembers {
  const hosted = fleet();
  hosted.handleSyncRequest({
    digest: null,
    entries: [
      { record: realRecord(r1), claim: null },
      { record: realRecord(r2), claim: null },
    ],
  });
  return hosted;
}

const ping = (seq: number, target: string, updates: Update[] = []): SwimMessage => ({
  type: 'ping',
  seq,
  target,
  updates,
});
const pingReq = (seq: number, target: string): SwimMessage => ({ type: 'pingReq', seq, target, updates: [] });
const ack = (seq: number): SwimMessage => ({ type: 'ack', seq, updates: [] });
const gossip = (...updates: Update[]): SwimMessage => ({ type: 'gossip', updates });

/** The records a host offers in push-pull, by member id. */
function offered(entries: readonly SyncEntry[]): Map<string, NodeRecord> {
  const records = new Map<string, NodeRecord>();
  for (const entry of entries) {
    const record = parseRecord(entry.record);
    if (record !== null) records.set(record.id, record);
  }
  return records;
}

function recordsIn(out: readonly HostedOutgoing[]): NodeRecord[] {
  return out
    .flatMap((item) => item.message.updates)
    .filter((update) => update.type === 'record')
    .map((update) => parseRecord(update.signed))
    .filter((record) => record !== null);
}

describe('hosting members', () => {
  it("signs each member's record with the member's own key, naming the host as via", () => {
    const hosted = fleet();
    const { digest, entries } = hosted.syncRequest();
    expect(entries.map((entry) => parseRecord(entry.record)?.id)).toEqual([m1.id, m2.id, m3.id]);
    for (const [entry, member] of entries.map((entry, i) => [entry, [m1, m2, m3][i]!] as const)) {
      expect(entry.claim).toBeNull();
      expect(parseRecord(entry.record)).toEqual({ ...baseRecord(member.id), via: host.id });
      expect(isSignedBy(entry.record, member.id, verifier)).toBe(true);
      // Neither the host's key nor another member's made it.
      expect(isSignedBy(entry.record, host.id, verifier)).toBe(false);
      expect(isSignedBy(entry.record, m1.id === member.id ? m2.id : m1.id, verifier)).toBe(false);
    }
    expect(digest).toEqual([m1, m2, m3].map(({ id }) => [id, 1, 0, 0, 1, 0]));
    expect(hosted.hosts(m1.id)).toBe(true);
    expect(hosted.hosts(r1.id)).toBe(false);
  });
});

describe('probes', () => {
  it('acks a ping meant for a live member, to the sender, with its seq, from the member', () => {
    const hosted = fleet();
    expect(hosted.receive(r1.id, m1.id, ping(7, m1.id), 0)).toEqual([
      { to: r1.id, member: m1.id, message: { type: 'ack', seq: 7, updates: [] } },
    ]);
    expect(hosted.stats.acks).toBe(1);
  });

  it('answers nothing for a crashed member, a ping meant for another, or a member it does not host', () => {
    const hosted = fleetKnowingReals();
    hosted.crash(m2.id);
    expect(hosted.isAlive(m2.id)).toBe(false);
    expect(hosted.receive(r1.id, m2.id, ping(1, m2.id), 0)).toEqual([]);
    expect(hosted.receive(r1.id, m2.id, pingReq(2, m1.id), 0)).toEqual([]);
    expect(hosted.receive(r1.id, m2.id, pingReq(3, r2.id), 0)).toEqual([]);
    // A ping meant for a previous owner of the address (or for another member) is not this one's.
    expect(hosted.receive(r1.id, m1.id, ping(4, m3.id), 0)).toEqual([]);
    expect(hosted.receive(r1.id, r2.id, ping(5, r2.id), 0)).toEqual([]);
    expect(hosted.tick(10_000)).toEqual([]);
  });

  it('answers a ping-req about another hosted member at once: ack if it is alive, nack if crashed', () => {
    const hosted = fleet();
    hosted.crash(m3.id);
    expect(hosted.receive(r1.id, m1.id, pingReq(11, m2.id), 0)).toEqual([
      { to: r1.id, member: m1.id, message: { type: 'ack', seq: 11, updates: [] } },
    ]);
    expect(hosted.receive(r1.id, m1.id, pingReq(12, m3.id), 0)).toEqual([
      { to: r1.id, member: m1.id, message: { type: 'nack', seq: 12, updates: [] } },
    ]);
  });

  it('nacks a ping-req about a member it has not heard of', () => {
    const hosted = fleet();
    expect(hosted.receive(r1.id, m1.id, pingReq(13, r2.id), 0)).toEqual([
      { to: r1.id, member: m1.id, message: { type: 'nack', seq: 13, updates: [] } },
    ]);
    expect(hosted.tick(10_000)).toEqual([]);
  });

  it('probes a real target for the requester and relays its ack with the requester’s seq', () => {
    const hosted = fleetKnowingReals();
    const out = hosted.receive(r1.id, m1.id, pingReq(21, r2.id), 1000);
    expect(out).toEqual([
      {
        to: r2.id,
        member: m1.id,
        message: { type: 'ping', seq: expect.any(Number) as number, target: r2.id, updates: [] },
      },
    ]);
    const seq = (out[0]!.message as { seq: number }).seq;
    // An ack with that seq to another member, or from someone other than the target, is no answer.
    expect(hosted.receive(r2.id, m2.id, ack(seq), 1001)).toEqual([]);
    expect(hosted.receive(r1.id, m1.id, ack(seq), 1001)).toEqual([]);
    expect(hosted.receive(r2.id, m1.id, ack(seq), 1002)).toEqual([
      { to: r1.id, member: m1.id, message: { type: 'ack', seq: 21, updates: [] } },
    ]);
    // Answered: no nack later, and a repeated ack is not relayed twice.
    expect(hosted.receive(r2.id, m1.id, ack(seq), 1003)).toEqual([]);
    expect(hosted.tick(1000 + 10 * hostedProbeTimeoutMs)).toEqual([]);
    expect(hosted.stats.helperProbes).toBe(1);
  });

  it('nacks the requester when the real target does not answer in time, and ignores a late ack', () => {
    const hosted = fleetKnowingReals();
    const out = hosted.receive(r1.id, m1.id, pingReq(31, r2.id), 1000);
    const seq = (out[0]!.message as { seq: number }).seq;
    expect(hosted.tick(1000 + hostedProbeTimeoutMs - 1)).toEqual([]);
    expect(hosted.tick(1000 + hostedProbeTimeoutMs)).toEqual([
      { to: r1.id, member: m1.id, message: { type: 'nack', seq: 31, updates: [] } },
    ]);
    expect(hosted.tick(1000 + 2 * hostedProbeTimeoutMs)).toEqual([]);
    expect(hosted.receive(r2.id, m1.id, ack(seq), 1000 + 2 * hostedProbeTimeoutMs)).toEqual([]);
  });

  it('sends nothing for a helper probe whose member crashed before it ended', () => {
    const hosted = fleetKnowingReals();
    const out = hosted.receive(r1.id, m1.id, pingReq(41, r2.id), 1000);
    const seq = (out[0]!.message as { seq: number }).seq;
    hosted.crash(m1.id);
    expect(hosted.receive(r2.id, m1.id, ack(seq), 1001)).toEqual([]);
    expect(hosted.tick(1000 + hostedProbeTimeoutMs)).toEqual([]);
  });

  it('keeps helper probes of several members apart', () => {
    const hosted = fleetKnowingReals();
    const first = hosted.receive(r1.id, m1.id, pingReq(51, r2.id), 0);
    const second = hosted.receive(r1.id, m2.id, pingReq(51, r2.id), 0);
    const seqOf = (out: HostedOutgoing[]): number => (out[0]!.message as { seq: number }).seq;
    expect(seqOf(first)).not.toBe(seqOf(second));
    expect(hosted.receive(r2.id, m2.id, ack(seqOf(second)), 1)).toEqual([
      { to: r1.id, member: m2.id, message: { type: 'ack', seq: 51, updates: [] } },
    ]);
    expect(hosted.tick(hostedProbeTimeoutMs)).toEqual([
      { to: r1.id, member: m1.id, message: { type: 'nack', seq: 51, updates: [] } },
    ]);
  });
});

describe('refutation', () => {
  it('refutes a suspicion about a live member with a newer record signed by the member', () => {
    const hosted = fleetKnowingReals();
    // The claim may ride on a message to any hosted member.
    const out = hosted.receive(
      r1.id,
      m2.id,
      gossip({ type: 'claim', signed: claim('suspect', m1.id, r1) }),
      0,
    );
    expect(out).toEqual([]);
    expect(hosted.stats.refutations).toBe(1);
    const record = offered(hosted.syncRequest().entries).get(m1.id);
    expect(record).toEqual({ ...baseRecord(m1.id), revision: 1, via: host.id });
    expect(hosted.syncRequest().digest).toContainEqual([m1.id, 1, 1, 0, 1, 1]);
    // The next message out, to whomever, carries it; so does gossip to every real member.
    const answer = hosted.receive(r2.id, m3.id, ping(3, m3.id), 1);
    expect(answer).toHaveLength(1);
    expect(answer[0]).toMatchObject({ to: r2.id, member: m3.id, message: { type: 'ack', seq: 3 } });
    const [update] = answer[0]!.message.updates;
    expect(update?.type).toBe('record');
    expect(isSignedBy(update!.signed, m1.id, verifier)).toBe(true);
    expect(parseRecord(update!.signed)).toEqual(record);
    const spread = hosted.gossip();
    expect(spread.map((item) => item.to).sort()).toEqual([r1.id, r2.id].sort());
    expect(spread.every((item) => item.message.type === 'gossip' && hosted.hosts(item.member))).toBe(true);
    expect(recordsIn(spread).map((r) => [r.id, r.revision])).toEqual([
      [m1.id, 1],
      [m1.id, 1],
    ]);
  });

  it('refutes a death claim too, and a claim riding on a ping before acking it', () => {
    const hosted = fleet();
    const out = hosted.receive(
      r1.id,
      m1.id,
      ping(9, m1.id, [{ type: 'claim', signed: claim('dead', m1.id, r2) }]),
      0,
    );
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ to: r1.id, member: m1.id, message: { type: 'ack', seq: 9 } });
    expect(recordsIn(out).map((r) => [r.id, r.revision])).toEqual([[m1.id, 1]]);
  });

  it('does not refute again a claim about an older version, nor one about a crashed member', () => {
    const hosted = fleet();
    hosted.receive(r1.id, m1.id, gossip({ type: 'claim', signed: claim('suspect', m1.id, r1, 1, 0) }), 0);
    expect(hosted.stats.refutations).toBe(1);
    hosted.receive(r2.id, m1.id, gossip({ type: 'claim', signed: claim('suspect', m1.id, r2, 1, 0) }), 1);
    hosted.receive(r2.id, m1.id, gossip({ type: 'claim', signed: claim('dead', m1.id, r2, 0, 7) }), 2);
    expect(hosted.stats.refutations).toBe(1);
    expect(offered(hosted.syncRequest().entries).get(m1.id)?.revision).toBe(1);
    // A claim about the refuted version is refuted in turn.
    hosted.receive(r2.id, m1.id, gossip({ type: 'claim', signed: claim('suspect', m1.id, r2, 1, 1) }), 3);
    expect(offered(hosted.syncRequest().entries).get(m1.id)?.revision).toBe(2);
    hosted.crash(m3.id);
    hosted.receive(r1.id, m2.id, gossip({ type: 'claim', signed: claim('suspect', m3.id, r1) }), 4);
    expect(hosted.stats.refutations).toBe(2);
  });

  it('carries a refutation on refutationRetransmits messages, then no more', () => {
    const hosted = fleet();
    hosted.receive(r1.id, m1.id, gossip({ type: 'claim', signed: claim('suspect', m2.id, r1) }), 0);
    for (let i = 0; i < refutationRetransmits; i++) {
      const out = hosted.receive(r1.id, m1.id, ping(100 + i, m1.id), 1 + i);
      expect(recordsIn(out).map((r) => [r.id, r.revision])).toEqual([[m2.id, 1]]);
    }
    expect(hosted.receive(r1.id, m1.id, ping(200, m1.id), 100)).toEqual([
      { to: r1.id, member: m1.id, message: { type: 'ack', seq: 200, updates: [] } },
    ]);
  });

  it('gossips nothing when it has nothing to refute', () => {
    expect(fleetKnowingReals().gossip()).toEqual([]);
  });
});

describe('push-pull', () => {
  it('offers only its live members', () => {
    const hosted = fleet();
    hosted.crash(m3.id);
    const { digest, entries } = hosted.syncRequest();
    expect(digest).toEqual([
      [m1.id, 1, 0, 0, 1, 0],
      [m2.id, 1, 0, 0, 1, 0],
    ]);
    expect([...offered(entries).keys()]).toEqual([m1.id, m2.id]);
  });

  it('answers a digest with the members it lacks or has older, and learns real members', () => {
    const hosted = fleet();
    const older = signRecord({ ...baseRecord(m2.id), via: host.id }, m2.crypto).signed;
    const reply = hosted.handleSyncRequest({
      digest: [
        [r1.id, 1, 0, 0, 1, 0],
        [m1.id, 1, 0, 0, 1, 0],
      ],
      entries: [
        { record: realRecord(r1), claim: null },
        // Echoes of its own members, and another host's members, are not real members.
        { record: older, claim: null },
        { record: realRecord(r2, { via: 'some-other-host' }), claim: null },
      ],
    });
    expect(reply.digest).toEqual(hosted.syncRequest().digest);
    expect([...offered(reply.entries).keys()]).toEqual([m2.id, m3.id]);
    expect([...hosted.realMembers().keys()]).toEqual([r1.id]);
    expect(hosted.realMembers().get(r1.id)?.record.addresses).toEqual(baseRecord(r1.id).addresses);
    // A real member's newer record replaces the older; an older one does not; a leaving one removes it.
    hosted.handleSyncRequest({
      digest: null,
      entries: [{ record: realRecord(r1, { revision: 3 }), claim: null }],
    });
    hosted.handleSyncRequest({
      digest: null,
      entries: [{ record: realRecord(r1, { revision: 2 }), claim: null }],
    });
    expect(hosted.realMembers().get(r1.id)?.record.revision).toBe(3);
    hosted.receive(
      r1.id,
      m1.id,
      gossip({ type: 'record', signed: realRecord(r1, { revision: 4, leaving: true }) }),
      0,
    );
    expect(hosted.realMembers().has(r1.id)).toBe(false);
  });

  it('refutes a suspicion or a death in a digest and returns the newer record', () => {
    const hosted = fleet();
    const reply = hosted.handleSyncRequest({
      digest: [
        [m1.id, 1, 0, 1, 1, 0],
        [m2.id, 1, 0, 2, 1, 0],
        [m3.id, 1, 0, 0, 1, 0],
      ],
      entries: [],
    });
    expect(hosted.stats.refutations).toBe(2);
    const records = offered(reply.entries);
    expect([...records.keys()]).toEqual([m1.id, m2.id]);
    expect(records.get(m1.id)?.revision).toBe(1);
    expect(records.get(m2.id)?.revision).toBe(1);
    expect(reply.entries.every((entry, i) => isSignedBy(entry.record, [m1, m2][i]!.id, verifier))).toBe(true);
  });

  it('answers a push without a digest with nothing, having taken its entries', () => {
    const hosted = fleet();
    expect(
      hosted.handleSyncRequest({
        digest: null,
        entries: [{ record: realRecord(r2), claim: claim('suspect', m1.id, r2) }],
      }),
    ).toEqual({ digest: null, entries: [] });
    expect([...hosted.realMembers().keys()]).toEqual([r2.id]);
    // The claim that came with it was refuted.
    expect(offered(hosted.syncRequest().entries).get(m1.id)?.revision).toBe(1);
  });

  it('sends back, on the last leg of its own push-pull, what the other side lacks', () => {
    const hosted = fleet();
    const back = hosted.handleSyncReply({
      digest: [
        [r1.id, 1, 0, 0, 1, 0],
        [m1.id, 1, 0, 0, 1, 0],
        [m2.id, 1, 0, 1, 1, 0],
      ],
      entries: [{ record: realRecord(r1), claim: null }],
    });
    const records = offered(back);
    expect([...records.keys()].sort()).toEqual([m2.id, m3.id].sort());
    expect(records.get(m2.id)?.revision).toBe(1);
    expect(hosted.realMembers().has(r1.id)).toBe(true);
    expect(hosted.handleSyncReply({ digest: null, entries: [] })).toEqual([]);
  });
});

// ---- with real members' state machines -------------------------------------------------------------

const config: MembershipConfig = { ...defaultMembershipConfig, joinGraceMs: 0 };

/** One frame on the wire: between two peers, a hosted member's named on it as the transport does. */
interface Frame {
  readonly from: string;
  readonly to: string;
  readonly body: string;
}

interface Seen {
  readonly atMs: number;
  readonly observer: string;
  readonly subject: string;
  readonly to: MemberState;
}

const stepMs = 5;

/**
 * Real nodes (MembershipState) and one host, exchanging messages by hand with zero latency: frames and
 * push-pull go through JSON and the wire schemas; a frame to a hosted member goes to its host naming the
 * member, and a host's frame naming a member is believed only if the member's record names the host
 * (transport.ts). Host timers run as scripts/fleet does: tick and gossip.
 */
class Cluster {
  nowMs = 0;
  readonly hosted = fleet();
  readonly states = new Map<string, MembershipState>();
  /** Directed links between peers that drop everything (`from>to`). */
  readonly cut = new Set<string>();
  readonly seen: Seen[] = [];
  /** Frames the host sent for each member, with when. */
  readonly sentBy = new Map<string, number[]>();
  refused = 0;
  private readonly queue: Frame[] = [];

  addState(member: Identity, seed: number): MembershipState {
    const state = new MembershipState({
      record: baseRecord(member.id),
      config,
      random: seededRandom(seed),
      crypto: member.crypto,
      nowMs: this.nowMs,
    });
    state.takeTransitions();
    this.states.set(member.id, state);
    return state;
  }

  state(id: string): MembershipState {
    const state = this.states.get(id);
    if (state === undefined) throw new Error(`no state ${id}`);
    return state;
  }

  /** What `observer` believes of `subject`. */
  stateOf(observer: string, subject: string): MemberState | undefined {
    return this.state(observer).get(subject)?.state;
  }

  /** The states `observer` put `subject` in, in order. */
  history(observer: string, subject: string): MemberState[] {
    return this.seen.filter((s) => s.observer === observer && s.subject === subject).map((s) => s.to);
  }

  /** The host joins through a real node as scripts/fleet does: its records, then a push-pull. */
  joinHost(seed: string): void {
    const { digest, entries } = this.hosted.syncRequest();
    this.syncRequestTo(host.id, seed, { digest: null, entries });
    const reply = this.syncRequestTo(host.id, seed, { digest, entries: [] });
    const back = this.hosted.handleSyncReply(wire(syncReplySchema, reply));
    if (back.length > 0) this.syncRequestTo(host.id, seed, { digest: null, entries: back });
    this.deliver();
  }

  /** A push-pull that real node `from` starts with `peer` (a hosted member's goes to its host). */
  sync(from: string, peer: string): void {
    const state = this.state(from);
    const to = state.viaOf(peer) ?? peer;
    if (this.cut.has(`${from}>${to}`) || this.cut.has(`${to}>${from}`)) return;
    const reply = this.syncRequestTo(from, to, state.syncRequest());
    const back = state.handleSyncReply(to, wire(syncReplySchema, reply), this.nowMs);
    this.collect(from);
    if (back.length > 0) this.syncRequestTo(from, to, { digest: null, entries: back });
    this.deliver();
  }

  run(durationMs: number): void {
    const untilMs = this.nowMs + durationMs;
    while (this.nowMs < untilMs) {
      this.nowMs += stepMs;
      for (const [id, state] of this.states) {
        state.tick(this.nowMs);
        this.collect(id);
        for (const peer of state.takeSyncs()) this.sync(id, peer);
      }
      this.fromHost(this.hosted.tick(this.nowMs));
      this.fromHost(this.hosted.gossip());
      this.deliver();
    }
  }

  private syncRequestTo(from: string, to: string, request: unknown): unknown {
    const parsed = wire(syncRequestSchema, request);
    if (to === host.id) return wire(syncReplySchema, this.hosted.handleSyncRequest(parsed));
    const reply = this.state(to).handleSyncRequest(from, parsed, this.nowMs);
    this.collect(to);
    return wire(syncReplySchema, reply);
  }

  /** A frame put on the wire by hand, delivered at once. */
  inject(frame: Frame): void {
    this.queue.push(frame);
    this.deliver();
  }

  /** Takes a real node's transitions and puts its outgoing messages on the wire. */
  collect(id: string): void {
    const state = this.state(id);
    for (const { id: subject, to } of state.takeTransitions())
      this.seen.push({ atMs: this.nowMs, observer: id, subject, to });
    for (const { to, message } of state.takeMessages()) {
      const via = state.viaOf(to);
      const body = JSON.stringify(via === undefined ? message : { ...message, member: to });
      this.queue.push({ from: id, to: via ?? to, body });
    }
  }

  private fromHost(out: readonly HostedOutgoing[]): void {
    for (const { to, member, message } of out) {
      const times = this.sentBy.get(member) ?? [];
      times.push(this.nowMs);
      this.sentBy.set(member, times);
      this.queue.push({ from: host.id, to, body: JSON.stringify({ ...message, member }) });
    }
  }

  private deliver(): void {
    for (let frame = this.queue.shift(); frame !== undefined; frame = this.queue.shift()) {
      if (this.cut.has(`${frame.from}>${frame.to}`)) continue;
      const { member, ...message } = wire(swimMessageSchema, JSON.parse(frame.body));
      if (frame.to === host.id) {
        if (member === undefined || !this.hosted.hosts(member)) this.refused++;
        else this.fromHost(this.hosted.receive(frame.from, member, message, this.nowMs));
        continue;
      }
      const state = this.states.get(frame.to);
      if (state === undefined) continue;
      if (member === undefined) state.receive(frame.from, message, this.nowMs);
      else if (state.viaOf(member) === frame.from) state.receive(member, message, this.nowMs);
      else {
        this.refused++;
        continue;
      }
      this.collect(frame.to);
    }
  }
}

function wire<T>(schema: { parse: (value: unknown) => T }, value: unknown): T {
  return schema.parse(JSON.parse(JSON.stringify(value)));
}

const hostedIds = [m1.id, m2.id, m3.id];

describe('hosted members among real nodes', () => {
  it('are learned by a push-pull and kept alive by a real node probing them', () => {
    const cluster = new Cluster();
    cluster.addState(r1, 7);
    cluster.joinHost(r1.id);
    for (const id of hostedIds) {
      expect(cluster.stateOf(r1.id, id)).toBe('alive');
      expect(cluster.state(r1.id).viaOf(id)).toBe(host.id);
    }
    expect([...cluster.hosted.realMembers().keys()]).toEqual([r1.id]);
    cluster.run(60_000);
    const state = cluster.state(r1.id);
    // Hundreds of probes, every one answered.
    expect(state.stats.probes).toBeGreaterThan(100);
    expect(state.stats.probesFailed).toBe(0);
    expect(cluster.hosted.stats.acks).toBeGreaterThanOrEqual(state.stats.probes - 1);
    for (const id of hostedIds) expect(cluster.history(r1.id, id)).toEqual(['alive']);
    expect(cluster.refused).toBe(0);
  });

  it('refuses frames a host sends for a member whose record does not name it', () => {
    const cluster = new Cluster();
    cluster.addState(r1, 7);
    cluster.addState(r2, 8);
    cluster.joinHost(r1.id);
    // r2, a real node, claims to speak for m1: r1 does not believe it.
    const before = cluster.state(r1.id).get(m1.id)?.lastHeardMs;
    cluster.nowMs += 1000;
    cluster.inject({
      from: r2.id,
      to: r1.id,
      body: JSON.stringify({ ...gossip({ type: 'claim', signed: claim('dead', m2.id, m1) }), member: m1.id }),
    });
    expect(cluster.refused).toBe(1);
    expect(cluster.state(r1.id).get(m1.id)?.lastHeardMs).toBe(before);
    expect(cluster.stateOf(r1.id, m2.id)).toBe('alive');
  });

  it('lets a real node find a crashed hosted member suspect, then dead, while the others stay alive', () => {
    const cluster = new Cluster();
    cluster.addState(r1, 7);
    cluster.joinHost(r1.id);
    cluster.run(5000);
    cluster.hosted.crash(m3.id);
    const crashedMs = cluster.nowMs;
    cluster.run(60_000);
    expect(cluster.history(r1.id, m3.id)).toEqual(['alive', 'suspect', 'dead']);
    for (const id of [m1.id, m2.id]) expect(cluster.history(r1.id, id)).toEqual(['alive']);
    // The crashed member said nothing more, and was never refuted.
    expect((cluster.sentBy.get(m3.id) ?? []).filter((atMs) => atMs > crashedMs)).toEqual([]);
    expect(cluster.hosted.stats.refutations).toBe(0);
    // Nor does the host offer it in push-pull.
    expect([...offered(cluster.hosted.syncRequest().entries).keys()]).toEqual([m1.id, m2.id]);
  });

  it('refutes a suspicion a real node spreads about a live hosted member', () => {
    const cluster = new Cluster();
    cluster.addState(r1, 7);
    cluster.addState(r2, 8);
    cluster.sync(r2.id, r1.id);
    cluster.joinHost(r1.id);
    cluster.sync(r2.id, r1.id);
    for (const id of hostedIds) expect(cluster.stateOf(r2.id, id)).toBe('alive');
    cluster.run(1000);
    // r2 suspects m1 (wrongly), and tells r1.
    const state = cluster.state(r1.id);
    state.receive(r2.id, gossip({ type: 'claim', signed: claim('suspect', m1.id, r2) }), cluster.nowMs);
    expect(state.get(m1.id)?.state).toBe('suspect');
    cluster.collect(r1.id);
    cluster.run(20_000);
    expect(cluster.hosted.stats.refutations).toBeGreaterThanOrEqual(1);
    for (const observer of [r1.id, r2.id]) {
      expect(cluster.stateOf(observer, m1.id)).toBe('alive');
      expect(cluster.state(observer).get(m1.id)?.record.revision).toBeGreaterThanOrEqual(1);
      expect(cluster.history(observer, m1.id)).not.toContain('dead');
    }
    expect(cluster.history(r1.id, m1.id)).toEqual(['alive', 'suspect', 'alive']);
  });

  it('relays probes between real nodes whose direct link is cut', () => {
    const cluster = new Cluster();
    cluster.addState(r1, 7);
    cluster.addState(r2, 8);
    cluster.sync(r2.id, r1.id);
    cluster.joinHost(r1.id);
    cluster.sync(r2.id, r1.id);
    expect([...cluster.hosted.realMembers().keys()].sort()).toEqual([r1.id, r2.id].sort());
    cluster.run(1000);
    cluster.cut.add(`${r1.id}>${r2.id}`);
    cluster.cut.add(`${r2.id}>${r1.id}`);
    cluster.run(60_000);
    // Each probe of the other failed directly and was answered through hosted members.
    expect(cluster.hosted.stats.helperProbes).toBeGreaterThan(10);
    expect(cluster.state(r1.id).stats.indirectProbes).toBeGreaterThan(0);
    for (const [observer, subject] of [
      [r1.id, r2.id],
      [r2.id, r1.id],
    ] as const) {
      expect(cluster.stateOf(observer, subject)).toBe('alive');
      expect(cluster.history(observer, subject)).not.toContain('suspect');
    }
    expect(cluster.refused).toBe(0);
  });
});
