import { describe, expect, it } from 'vitest';
import { seededRandom } from '../shared/random.ts';
import {
  defaultMembershipConfig,
  pushPullIntervalMs,
  retransmitLimit,
  suspicionTimeoutMs,
  suspicionTimeouts,
  type MembershipConfig,
} from './config.ts';
import { BroadcastQueue } from './dissemination.ts';
import type { SwimMessage, Update } from './messages.ts';
import { signClaim, signRecord, type Claim, type NodeRecord, type Signed } from './records.ts';
import { simulatedCrypto, simulatedRecord } from './simulation.ts';
import { MembershipState, type Outbound } from './state.ts';

// Members in these tests are seconds old; the grace for fresh starts has a test of its own.
const config: MembershipConfig = { ...defaultMembershipConfig, joinGraceMs: 0 };

function core(id = 'a', overrides: Partial<MembershipConfig> = {}, incarnation = 1): MembershipState {
  return new MembershipState({
    record: simulatedRecord(id, incarnation),
    config: { ...config, ...overrides },
    random: seededRandom(7),
    crypto: simulatedCrypto(id),
    nowMs: 0,
  });
}

function record(id: string, incarnation: number, revision = 0, extra: Partial<NodeRecord> = {}): Signed {
  return signRecord(
    { ...simulatedRecord(id, incarnation), revision, leaving: false, ...extra },
    simulatedCrypto(id),
  ).signed;
}

function claim(
  kind: Claim['kind'],
  subject: string,
  from: string,
  incarnation: number,
  revision = 0,
): Signed {
  return signClaim({ kind, subject, from, incarnation, revision }, simulatedCrypto(from)).signed;
}

const gossip = (...updates: Update[]): SwimMessage => ({ type: 'gossip', updates });
const recordUpdate = (signed: Signed): Update => ({ type: 'record', signed });
const claimUpdate = (signed: Signed): Update => ({ type: 'claim', signed });

/** A core that knows members `ids` (all alive, incarnation 1). */
function coreWith(ids: string[], overrides: Partial<MembershipConfig> = {}): MembershipState {
  const state = core('a', overrides);
  state.receive(ids[0] ?? 'x', gossip(...ids.map((id) => recordUpdate(record(id, 1)))), 0);
  state.takeMessages();
  state.takeTransitions();
  return state;
}

function sentOfType(messages: Outbound[], type: SwimMessage['type']): Outbound[] {
  return messages.filter((out) => out.message.type === type);
}

/** Runs a core's timers from `fromMs` to `toMs` in 5-ms steps, collecting what it sends. */
function run(state: MembershipState, fromMs: number, toMs: number): Outbound[] {
  const sent: Outbound[] = [];
  for (let now = fromMs; now <= toMs; now += 5) {
    state.tick(now);
    sent.push(...state.takeMessages());
  }
  return sent;
}

describe('records and versions', () => {
  it('accepts a newer record and never lets an older one overwrite it', () => {
    const state = coreWith(['b']);
    state.receive('b', gossip(recordUpdate(record('b', 1, 5, { cpuMillis: 5000 }))), 1);
    state.receive('b', gossip(recordUpdate(record('b', 1, 4, { cpuMillis: 4000 }))), 2);
    expect(state.get('b')?.record).toMatchObject({ revision: 5, cpuMillis: 5000 });
    // A record from an earlier boot loses whatever its revision.
    state.receive('b', gossip(recordUpdate(record('b', 0, 99))), 3);
    expect(state.get('b')?.record).toMatchObject({ incarnation: 1, revision: 5 });
  });

  it('ignores records and claims with a bad signature, and claims from strangers', () => {
    const state = coreWith(['b', 'c']);
    const forged = signRecord(
      { ...simulatedRecord('b', 2), revision: 0, leaving: false },
      simulatedCrypto('b', 'not-b'),
    );
    state.receive('c', gossip(recordUpdate(forged.signed)), 1);
    expect(state.get('b')?.record.incarnation).toBe(1);
    const forgedClaim = signClaim(
      { kind: 'dead', subject: 'b', from: 'c', incarnation: 1, revision: 0 },
      simulatedCrypto('c', 'not-c'),
    ).signed;
    state.receive('c', gossip(claimUpdate(forgedClaim)), 2);
    expect(state.get('b')?.state).toBe('alive');
    state.receive('c', gossip(claimUpdate(claim('dead', 'b', 'stranger', 1))), 3);
    expect(state.get('b')?.state).toBe('alive');
    expect(state.stats.badSignatures).toBe(2);
  });

  it('ignores malformed and oversized bodies', () => {
    const state = coreWith(['b']);
    state.receive('b', gossip(recordUpdate({ body: '{"id":"b"', signature: 'AA==' })), 1);
    state.receive('b', gossip(recordUpdate({ body: JSON.stringify({ id: 'z' }), signature: 'AA==' })), 1);
    expect(state.get('z')).toBeUndefined();
    expect(() =>
      signRecord(
        { ...simulatedRecord('b', 1), revision: 0, leaving: false, labels: { big: 'x'.repeat(5000) } },
        simulatedCrypto('b'),
      ),
    ).toThrow(/exceeds 4096 bytes/);
  });
});

describe('suspicion and refutation', () => {
  it('suspects on a higher or equal version only, and a higher version refutes', () => {
    const state = coreWith(['b', 'c']);
    state.receive('c', gossip(claimUpdate(claim('suspect', 'b', 'c', 1, 0))), 10);
    expect(state.get('b')?.state).toBe('suspect');
    // The same version does not refute; a newer revision does.
    state.receive('b', gossip(recordUpdate(record('b', 1, 0))), 11);
    expect(state.get('b')?.state).toBe('suspect');
    state.receive('b', gossip(recordUpdate(record('b', 1, 1))), 12);
    expect(state.get('b')?.state).toBe('alive');
    // A claim about the refuted version is stale.
    state.receive('c', gossip(claimUpdate(claim('dead', 'b', 'c', 1, 0))), 13);
    expect(state.get('b')?.state).toBe('alive');
    expect(state.takeTransitions()).toEqual([
      { id: 'b', from: 'alive', to: 'suspect' },
      { id: 'b', from: 'suspect', to: 'alive' },
    ]);
  });

  it('refutes a suspicion about itself with a newer signed record, and counts it against its own health', () => {
    const state = coreWith(['b', 'c']);
    state.receive('c', gossip(claimUpdate(claim('suspect', 'a', 'c', 1, 0))), 10);
    expect(state.record.revision).toBe(1);
    expect(state.localHealth).toBe(1);
    // The refutation goes out at once (epidemic), as the newest record.
    const sent = state.takeMessages();
    expect(sent.length).toBeGreaterThan(0);
    expect(
      sent.some((out) =>
        out.message.updates.some((u) => u.type === 'record' && u.signed.body.includes('"revision":1')),
      ),
    ).toBe(true);
    // A claim about an older version needs no refutation; one from an earlier life neither.
    state.receive('c', gossip(claimUpdate(claim('dead', 'a', 'c', 1, 0))), 11);
    state.receive('c', gossip(claimUpdate(claim('dead', 'a', 'c', 0, 9))), 12);
    expect(state.record.revision).toBe(1);
  });

  it('probes, asks k helpers, then suspects; dead after the maximum timeout with no confirmation', () => {
    const ids = ['b', 'c', 'd', 'e', 'f'];
    const state = coreWith(ids);
    const probeAndIndirectMs = config.probeTimeoutMs + config.indirectProbeTimeoutMs;
    const sent = run(state, 0, config.probeIntervalMs + probeAndIndirectMs + 10);
    const ping = sentOfType(sent, 'ping')[0];
    expect(ping).toBeDefined();
    const target = ping!.to;
    const pingReqs = sentOfType(sent, 'pingReq');
    expect(pingReqs.length).toBe(config.indirectChecks);
    expect(pingReqs.every((out) => out.to !== target && out.message.type === 'pingReq')).toBe(true);
    expect(state.get(target)?.state).toBe('suspect');
    // Every helper was silent too (no nacks): this node doubts itself...
    expect(state.localHealth).toBe(config.indirectChecks);
    // ...until its next probes of others succeed.
    const suspectedAt = state.get(target)!.stateChangedMs;
    const timeouts = suspicionTimeouts(config, 6);
    let now = suspectedAt;
    const step = (untilMs: number): void => {
      for (; now <= untilMs; now += 5) {
        state.tick(now);
        for (const out of state.takeMessages()) {
          // Others answer; helpers asked about the target honestly report that it does not.
          if (out.message.type === 'ping' && out.to !== target)
            state.receive(out.to, { type: 'ack', seq: out.message.seq, updates: [] }, now);
          if (out.message.type === 'pingReq')
            state.receive(out.to, { type: 'nack', seq: out.message.seq, updates: [] }, now);
        }
      }
    };
    step(suspectedAt + timeouts.maxMs - 10);
    expect(state.localHealth).toBe(0);
    expect(state.get(target)?.state).toBe('suspect');
    step(suspectedAt + timeouts.maxMs + 10);
    expect(state.get(target)?.state).toBe('dead');
  });

  it('an ack within the timeout keeps the member alive and restores health', () => {
    const state = coreWith(['b']);
    state.noteStall(0, 0);
    expect(state.localHealth).toBe(1);
    const sent = run(state, 0, 200);
    const ping = sentOfType(sent, 'ping')[0]!;
    expect(ping.to).toBe('b');
    state.receive('b', { type: 'ack', seq: (ping.message as { seq: number }).seq, updates: [] }, 210);
    expect(state.get('b')?.state).toBe('alive');
    expect(state.get('b')?.lastHeardMs).toBe(210);
    expect(state.localHealth).toBe(0);
    // The direct answer timed the round trip, once.
    const [roundTrip, ...more] = state.takeRoundTrips();
    expect(more).toEqual([]);
    expect(roundTrip).toBeGreaterThan(0);
    expect(roundTrip).toBeLessThanOrEqual(210);
    expect(state.takeRoundTrips()).toEqual([]);
  });

  it('a helper relays the ack or nacks, and a failed dial nacks at once', () => {
    const state = coreWith(['b', 'c']);
    state.receive('b', { type: 'pingReq', seq: 41, target: 'c', updates: [] }, 5);
    const ping = sentOfType(state.takeMessages(), 'ping')[0]!;
    expect(ping.to).toBe('c');
    state.receive('c', { type: 'ack', seq: (ping.message as { seq: number }).seq, updates: [] }, 6);
    expect(sentOfType(state.takeMessages(), 'ack')).toEqual([
      { to: 'b', message: expect.objectContaining({ type: 'ack', seq: 41 }) as unknown },
    ]);
    state.receive('b', { type: 'pingReq', seq: 42, target: 'c', updates: [] }, 10);
    state.takeMessages();
    state.unreachable('c', 11);
    expect(sentOfType(state.takeMessages(), 'nack')).toEqual([
      { to: 'b', message: expect.objectContaining({ type: 'nack', seq: 42 }) as unknown },
    ]);
  });

  it('independent confirmations shrink the suspicion timeout to its minimum', () => {
    const ids = ['b', 'c', 'd', 'e', 'f', 'g'];
    const state = coreWith(ids);
    const timeouts = suspicionTimeouts(config, 7);
    expect(timeouts.confirmationsExpected).toBe(2);
    state.receive('c', gossip(claimUpdate(claim('suspect', 'b', 'c', 1))), 1000);
    state.receive('d', gossip(claimUpdate(claim('suspect', 'b', 'd', 1))), 1100);
    // A repeated accuser is not independent.
    state.receive('d', gossip(claimUpdate(claim('suspect', 'b', 'd', 1))), 1150);
    // One confirmation: past the minimum, still suspect (its timeout is suspicionTimeoutMs(…, 1)).
    state.tick(1000 + timeouts.minMs + 100);
    expect(state.get('b')?.state).toBe('suspect');
    expect(suspicionTimeoutMs(timeouts, 1)).toBeGreaterThan(timeouts.minMs + 100);
    // The second: the timeout is now the minimum, already over.
    state.receive('e', gossip(claimUpdate(claim('suspect', 'b', 'e', 1))), 1000 + timeouts.minMs + 200);
    state.tick(1000 + timeouts.minMs + 205);
    expect(state.get('b')?.state).toBe('dead');
    // The dead claim it gossips (within urgentGossipGapMs) is its own, signed.
    const from = 1000 + timeouts.minMs + 205;
    const claims = run(state, from, from + config.urgentGossipGapMs)
      .flatMap((out) => out.message.updates)
      .filter((u) => u.type === 'claim' && u.signed.body.includes('"kind":"dead"'));
    expect(claims[0]?.signed.body).toContain('"from":"a"');
  });

  it('a stall pushes suspicion deadlines back and stretches them while this node is unwell', () => {
    const state = coreWith(['b', 'c', 'd']);
    state.receive('c', gossip(claimUpdate(claim('suspect', 'b', 'c', 1))), 0);
    const { maxMs } = suspicionTimeouts(config, 4);
    state.noteStall(1000, maxMs);
    const health = 1 + Math.floor(1000 / config.probeTimeoutMs);
    expect(state.localHealth).toBe(health);
    state.tick(maxMs);
    expect(state.get('b')?.state).toBe('suspect');
    // Shifted by the stall, and stretched × (localHealth + 1) while this node has not proven itself.
    state.tick(1000 + (health + 1) * maxMs - 5);
    expect(state.get('b')?.state).toBe('suspect');
    state.tick(1000 + (health + 1) * maxMs);
    expect(state.get('b')?.state).toBe('dead');
  });

  it('gives a member that has just (re)started a longer suspicion timeout', () => {
    const state = new MembershipState({
      record: simulatedRecord('a', 1),
      config: defaultMembershipConfig,
      random: seededRandom(7),
      crypto: simulatedCrypto('a'),
      nowMs: 0,
    });
    state.receive('b', gossip(...['b', 'c'].map((id) => recordUpdate(record(id, 1)))), 0);
    const { minMs } = suspicionTimeouts(defaultMembershipConfig, 3);
    // Joined at 0, suspected at 1000: within the grace.
    state.receive('c', gossip(claimUpdate(claim('suspect', 'b', 'c', 1))), 1000);
    state.tick(1000 + minMs * defaultMembershipConfig.joinGraceMult - 5);
    expect(state.get('b')?.state).toBe('suspect');
    state.tick(1000 + minMs * defaultMembershipConfig.joinGraceMult);
    expect(state.get('b')?.state).toBe('dead');
    // Restarted (a higher incarnation) long after: the grace starts again.
    const later = 60_000;
    state.receive('b', gossip(recordUpdate(record('b', 2))), later);
    state.receive('c', gossip(claimUpdate(claim('suspect', 'b', 'c', 2))), later + 100);
    state.tick(later + 100 + minMs);
    expect(state.get('b')?.state).toBe('suspect');
  });

  it('a gossiped dead claim is believed; a restart with a higher incarnation brings the member back', () => {
    const state = coreWith(['b', 'c']);
    state.receive('c', gossip(claimUpdate(claim('dead', 'b', 'c', 1, 3))), 5);
    expect(state.get('b')?.state).toBe('dead');
    state.receive('b', gossip(recordUpdate(record('b', 1, 3))), 6);
    expect(state.get('b')?.state).toBe('dead');
    state.receive('b', gossip(recordUpdate(record('b', 2, 0))), 7);
    expect(state.get('b')).toMatchObject({ state: 'alive', record: { incarnation: 2, revision: 0 } });
  });

  it('tells a suspect member about the suspicion on every message to it (buddy system)', () => {
    const state = coreWith(['b', 'c']);
    const suspicion = claim('suspect', 'b', 'c', 1);
    state.receive('c', gossip(claimUpdate(suspicion)), 5);
    state.takeMessages();
    state.receive('b', { type: 'ping', seq: 1, target: 'a', updates: [] }, 6);
    const ack = state.takeMessages().find((out) => out.to === 'b');
    expect(ack?.message.updates[0]).toEqual(claimUpdate(suspicion));
  });
});

describe('connection loss', () => {
  it('probes a member out of turn when its connection drops, at most once per gap', () => {
    const ids = ['b', 'c', 'd', 'e', 'f', 'g', 'h'];
    const state = coreWith(ids);
    state.connectionLost('e', 0);
    const first = sentOfType(state.takeMessages(), 'ping');
    expect(first.map((out) => out.to)).toEqual(['e']);
    // The connection was refused: helpers are asked at once, and nack at once too.
    state.unreachable('e', 1);
    const pingReqs = sentOfType(state.takeMessages(), 'pingReq');
    expect(pingReqs).toHaveLength(config.indirectChecks);
    for (const out of pingReqs) {
      state.receive(out.to, { type: 'nack', seq: (out.message as { seq: number }).seq, updates: [] }, 2);
    }
    expect(state.get('e')?.state).toBe('suspect');
    expect(state.localHealth).toBe(0);
    // A second drop soon after does not jump the queue again.
    state.receive('e', gossip(recordUpdate(record('e', 1, 1))), 3);
    state.takeMessages();
    state.connectionLost('e', 4);
    expect(sentOfType(state.takeMessages(), 'ping').map((out) => out.to)).not.toContain('e');
  });
});

describe('leave', () => {
  it('a leave is "left", spread at once, never aged into dead, and no longer probed', () => {
    const state = coreWith(['b', 'c']);
    state.receive('b', gossip(recordUpdate(record('b', 1, 1, { leaving: true }))), 100);
    expect(state.get('b')?.state).toBe('left');
    expect(state.takeMessages().length).toBeGreaterThan(0);
    const sent = run(state, 100, 60_000);
    expect(sentOfType(sent, 'ping').every((out) => out.to !== 'b')).toBe(true);
    expect(state.get('b')?.state).toBe('left');
    // A suspicion about the left version changes nothing.
    state.receive('c', gossip(claimUpdate(claim('dead', 'b', 'c', 1, 1))), 60_001);
    expect(state.get('b')?.state).toBe('left');
  });

  it('leaving announces itself to peers and stops probing', () => {
    const state = coreWith(['b', 'c']);
    state.setConnected(['b', 'c']);
    state.leave(100);
    const sent = state.takeMessages();
    expect(new Set(sent.map((out) => out.to))).toEqual(new Set(['b', 'c']));
    expect(state.get('a')?.state).toBe('left');
    expect(sentOfType(run(state, 100, 5000), 'ping')).toEqual([]);
  });
});

describe('push-pull', () => {
  it('a joiner learns the live members from a seed; the seed learns the joiner; the gone stay gone', () => {
    const seed = coreWith(['b', 'c', 'd']);
    seed.receive('c', gossip(claimUpdate(claim('dead', 'd', 'c', 1))), 1);
    const joiner = core('j');
    const reply = seed.handleSyncRequest('j', joiner.syncRequest(), 2);
    expect(seed.get('j')?.state).toBe('alive');
    const back = joiner.handleSyncReply('a', reply, 3);
    expect(back).toEqual([]);
    expect(
      joiner
        .list()
        .map((m) => [m.record.id, m.state])
        .sort(),
    ).toEqual([
      ['a', 'alive'],
      ['b', 'alive'],
      ['c', 'alive'],
      ['j', 'alive'],
    ]);
  });

  it('a peer that believes a member dead only makes it suspect here; both sides refute a claim about themselves', () => {
    const left = coreWith(['b', 'c']);
    const right = core('b');
    right.receive('a', gossip(...['a', 'c'].map((id) => recordUpdate(record(id, 1)))), 0);
    right.receive(
      'x',
      gossip(claimUpdate(claim('dead', 'a', 'c', 1)), claimUpdate(claim('dead', 'c', 'b', 1))),
      1,
    );
    left.receive('x', gossip(claimUpdate(claim('dead', 'b', 'c', 1))), 1);
    expect(right.get('a')?.state).toBe('dead');
    expect(left.get('b')?.state).toBe('dead');
    // The partition heals: left runs a push-pull with right.
    const reply = right.handleSyncRequest('a', left.syncRequest(), 10);
    expect(right.record.revision).toBe(1); // right saw left's digest call it dead, and refuted
    const back = left.handleSyncReply('b', reply, 11);
    expect(left.record.revision).toBe(1);
    expect(left.get('b')?.state).toBe('alive');
    expect(left.get('c')?.state).toBe('suspect');
    right.handleSyncRequest('a', { digest: null, entries: back }, 12);
    expect(right.get('a')?.state).toBe('alive');
  });
});

describe('dissemination and parameters', () => {
  it('sends each update a bounded number of times, newest first, within the byte budget', () => {
    const queue = new BroadcastQueue();
    const update = (n: number): Update => recordUpdate(record(`m${n}`, 1));
    for (let n = 0; n < 5; n++) queue.enqueue(`m${n}`, update(n));
    queue.enqueue('m0', update(9)); // replaces m0's item
    expect(queue.size).toBe(5);
    const first = queue.take(2, 1 << 20, 3);
    expect(first).toEqual([update(9), update(4)]);
    expect(queue.take(10, 1 << 20, 3)).toHaveLength(5);
    expect(queue.take(10, 1 << 20, 3)).toHaveLength(5);
    expect(queue.size).toBe(3); // the two sent first reached the limit of 3
    const oneByteBudget = queue.take(10, 1, 3);
    expect(oneByteBudget).toEqual([]);
  });

  it('derives timeouts from N as documented', () => {
    const at50 = suspicionTimeouts(config, 50);
    expect(at50.minMs).toBe(1500); // the floor: 4 × log10(50) × 200 = 1359 ms
    expect(at50.maxMs).toBe(9000);
    expect(at50.confirmationsExpected).toBe(2);
    expect(suspicionTimeoutMs(at50, 0)).toBe(9000);
    expect(suspicionTimeoutMs(at50, 1)).toBe(Math.floor(9000 - 7500 * (Math.log(2) / Math.log(3))));
    expect(suspicionTimeoutMs(at50, 2)).toBe(1500);
    expect(suspicionTimeouts(config, 1000).minMs).toBe(2400);
    expect(suspicionTimeouts(config, 3).confirmationsExpected).toBe(0);
    expect(retransmitLimit(config, 50)).toBe(8);
    expect(retransmitLimit(config, 9)).toBe(4);
    expect(pushPullIntervalMs(config, 32)).toBe(30_000);
    expect(pushPullIntervalMs(config, 50)).toBe(60_000);
  });

  it('probes every member once per round, in a shuffled order', () => {
    const ids = ['b', 'c', 'd', 'e', 'f', 'g', 'h'];
    const state = coreWith(ids, { probeTimeoutMs: 1, indirectProbeTimeoutMs: 1 });
    const targets: string[] = [];
    for (let now = 0; targets.length < ids.length * 2; now += 5) {
      state.tick(now);
      for (const out of state.takeMessages()) {
        if (out.message.type !== 'ping') continue;
        targets.push(out.to);
        state.receive(out.to, { type: 'ack', seq: out.message.seq, updates: [] }, now);
      }
    }
    expect(new Set(targets.slice(0, ids.length))).toEqual(new Set(ids));
    expect(new Set(targets.slice(ids.length))).toEqual(new Set(ids));
    expect(targets.slice(0, ids.length)).not.toEqual(targets.slice(ids.length));
  });
});
