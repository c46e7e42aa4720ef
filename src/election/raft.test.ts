import { describe, expect, it } from 'vitest';
import { seededRandom } from '../shared/random.ts';
import { RaftCore, type RaftInit } from './raft.ts';
import { RaftSimulation } from './simulation.ts';
import type { LogEntry, RaftMessage } from './types.ts';

function core(id: string, overrides: Partial<RaftInit> = {}): RaftCore {
  return new RaftCore({
    id,
    electionTicks: 10,
    heartbeatTicks: 2,
    random: seededRandom(id.charCodeAt(0)),
    entriesPerMessageMax: 64,
    bytesPerMessageMax: 1 << 20,
    hardState: { term: 0, votedFor: null, commitIndex: 0 },
    snapshot: null,
    entries: [],
    ...overrides,
  });
}

function drain(c: RaftCore): RaftMessage[] {
  const sent: RaftMessage[] = [];
  while (c.hasReady()) {
    const ready = c.ready();
    sent.push(...ready.messages);
    c.advance(ready);
  }
  return sent;
}

const config = (voters: string[], learners: string[] = []): LogEntry => ({
  index: 1,
  term: 1,
  kind: 'config',
  data: JSON.stringify({ voters, learners }),
});

/** `peer` answers the leader s1: it holds the log up to matchIndex. */
function acknowledge(c: RaftCore, peer: string, matchIndex: number): void {
  c.step({
    type: 'appendEntriesResponse',
    from: peer,
    to: 's1',
    term: c.status().term,
    success: true,
    matchIndex,
    conflictIndex: 0,
    readSeq: 0,
  });
}

/** Makes `c` leader by ticking it into a campaign and answering its (pre-)vote requests with grants. */
function elect(c: RaftCore, voters: string[]): RaftMessage[] {
  for (let i = 0; i < 40 && c.status().role !== 'leader'; i++) {
    c.tick();
    for (const m of drain(c)) {
      if (m.type === 'requestVote') {
        c.step({
          type: 'requestVoteResponse',
          from: m.to,
          to: c.id,
          term: m.term,
          granted: true,
          preVote: m.preVote,
        });
      }
    }
  }
  expect(c.status().role).toBe('leader');
  expect(voters).toContain(c.id);
  return drain(c);
}

describe('RaftCore', () => {
  it('a bootstrapped single node elects itself and commits proposals', () => {
    const c = core('a');
    c.bootstrap();
    for (let i = 0; i < 25 && c.status().role !== 'leader'; i++) {
      c.tick();
      drain(c);
    }
    expect(c.status().role).toBe('leader');
    const { index } = c.propose('x');
    drain(c);
    expect(c.status().commitIndex).toBe(index);
    expect(c.status().appliedIndex).toBe(index);
  });

  it('refuses proposals on a follower with NOT_LEADER', () => {
    const c = core('a');
    c.bootstrap();
    expect(() => c.propose('x')).toThrow(/not the leader/);
  });

  it('a node that is no voter never campaigns', () => {
    const c = core('f');
    for (let i = 0; i < 100; i++) c.tick();
    expect(drain(c)).toEqual([]);
    expect(c.status().role).toBe('follower');
  });

  it('Figure 8: an old-term entry on a majority is not committed until an entry of the current term is', () => {
    // s1 holds [config@1, x@2] and wins term 4; s2 also holds x@2 (a majority of 3), s3 does not.
    const entries: LogEntry[] = [
      config(['s1', 's2', 's3']),
      { index: 2, term: 2, kind: 'command', data: 'x' },
    ];
    const c = core('s1', { hardState: { term: 3, votedFor: null, commitIndex: 1 }, entries });
    elect(c, ['s1', 's2', 's3']);
    expect(c.status().term).toBe(4);
    // s2 acknowledges only the old entry: counting replicas must not commit it (term 2 ≠ 4).
    c.step({
      type: 'appendEntriesResponse',
      from: 's2',
      to: 's1',
      term: 4,
      success: true,
      matchIndex: 2,
      conflictIndex: 0,
      readSeq: 0,
    });
    drain(c);
    expect(c.status().commitIndex).toBe(1);
    // Once s2 holds the leader's no-op (index 3, term 4), both commit together.
    c.step({
      type: 'appendEntriesResponse',
      from: 's2',
      to: 's1',
      term: 4,
      success: true,
      matchIndex: 3,
      conflictIndex: 0,
      readSeq: 0,
    });
    drain(c);
    expect(c.status().commitIndex).toBe(3);
  });

  it('ReadIndex releases a read only after a quorum confirms leadership', () => {
    const c = core('s1', {
      hardState: { term: 1, votedFor: null, commitIndex: 1 },
      entries: [config(['s1', 's2', 's3'])],
    });
    elect(c, ['s1', 's2', 's3']);
    c.step({
      type: 'appendEntriesResponse',
      from: 's2',
      to: 's1',
      term: c.status().term,
      success: true,
      matchIndex: 2,
      conflictIndex: 0,
      readSeq: 0,
    });
    drain(c);
    c.readIndex('r1');
    const sent = c.ready();
    expect(sent.readStates).toEqual([]);
    const heartbeat = sent.messages.find((m) => m.type === 'appendEntries' && m.to === 's3');
    c.advance(sent);
    expect(heartbeat?.type === 'appendEntries' ? heartbeat.readSeq : 0).toBeGreaterThan(0);
    const seq = heartbeat?.type === 'appendEntries' ? heartbeat.readSeq : 0;
    // An echo of an older sequence proves nothing.
    c.step({
      type: 'appendEntriesResponse',
      from: 's3',
      to: 's1',
      term: c.status().term,
      success: true,
      matchIndex: 2,
      conflictIndex: 0,
      readSeq: seq - 1,
    });
    expect(c.ready().readStates).toEqual([]);
    c.step({
      type: 'appendEntriesResponse',
      from: 's3',
      to: 's1',
      term: c.status().term,
      success: true,
      matchIndex: 2,
      conflictIndex: 0,
      readSeq: seq,
    });
    expect(c.ready().readStates).toEqual([{ requestId: 'r1', index: 2 }]);
  });

  it('a forgiven stall: the leader heartbeats and keeps its quorum window; rationed, so a node that keeps stalling still acts', () => {
    const c = core('s1', {
      hardState: { term: 1, votedFor: null, commitIndex: 1 },
      entries: [config(['s1', 's2', 's3'])],
    });
    elect(c, ['s1', 's2', 's3']);
    const term = c.status().term;
    // Answers arrived, then the check-quorum window ran out while the process was stalled.
    acknowledge(c, 's2', 2);
    acknowledge(c, 's3', 2);
    for (let i = 0; i < 10; i++) c.tick();
    drain(c);
    for (let i = 0; i < 9; i++) c.tick();
    drain(c);
    expect(c.forgiveStall()).toBe(true);
    const heartbeats = drain(c).filter((m) => m.type === 'appendEntries');
    expect(heartbeats.map((m) => m.to).sort()).toEqual(['s2', 's3']);
    // A whole window from now: answers to those heartbeats keep it leader.
    for (let i = 0; i < 9; i++) c.tick();
    acknowledge(c, 's2', 2);
    c.tick();
    expect(c.status()).toMatchObject({ role: 'leader', term });
    // Stalling again within two election timeouts is not forgiven: silence then deposes it as usual.
    expect(c.forgiveStall()).toBe(false);
    for (let i = 0; i < 10; i++) c.tick();
    expect(c.status().role).toBe('follower');

    // A follower with a leader restarts its timeout; one with none (or a candidate) has no one to wait for.
    const f = core('s2', {
      hardState: { term: 1, votedFor: null, commitIndex: 1 },
      entries: [config(['s1', 's2', 's3'])],
    });
    f.step({
      type: 'appendEntries',
      from: 's1',
      to: 's2',
      term: 1,
      prevLogIndex: 1,
      prevLogTerm: 1,
      entries: [],
      leaderCommit: 1,
      readSeq: 0,
    });
    drain(f);
    // Its timer was due (an election timeout is 10 to 20 ticks) when it stalled: the shell has not counted the stall.
    for (let i = 0; i < 9; i++) f.tick();
    expect(f.forgiveStall()).toBe(true);
    expect(f.ticksSinceLeaderContact()).toBe(0);
    expect(f.status().role).toBe('follower');
    const lonely = core('s3', { entries: [config(['s1', 's2', 's3'])] });
    for (let i = 0; i < 30; i++) lonely.tick();
    expect(lonely.forgiveStall()).toBe(false);
  });

  it('heartbeats reach voters every heartbeat and learners every learnerHeartbeatTicks; reads ask voters only', () => {
    const c = core('s1', {
      hardState: { term: 1, votedFor: null, commitIndex: 1 },
      entries: [config(['s1', 's2', 's3'], ['l1', 'l2'])],
      learnerHeartbeatTicks: 6,
    });
    elect(c, ['s1', 's2', 's3']);
    const to: Record<string, number> = {};
    const answer = (peer: string): void => acknowledge(c, peer, 2);
    for (const peer of ['s2', 's3', 'l1', 'l2']) answer(peer);
    drain(c);
    for (let i = 0; i < 24; i++) {
      c.tick();
      for (const m of drain(c)) {
        if (m.type !== 'appendEntries') continue;
        to[m.to] = (to[m.to] ?? 0) + 1;
        answer(m.to);
      }
    }
    expect(c.status().role).toBe('leader');
    expect(to).toEqual({ s2: 12, s3: 12, l1: 4, l2: 4 });
    drain(c);
    c.readIndex('r1');
    expect(
      drain(c)
        .map((m) => m.to)
        .sort(),
    ).toEqual(['s2', 's3']);
  });

  it('a caught-up learner hears of a new commit index at once, not at its next heartbeat', () => {
    const c = core('s1', {
      hardState: { term: 1, votedFor: null, commitIndex: 1 },
      entries: [config(['s1', 's2', 's3'], ['l1'])],
    });
    elect(c, ['s1', 's2', 's3']);
    const ack = (peer: string, matchIndex: number): void => acknowledge(c, peer, matchIndex);
    for (const peer of ['s2', 's3', 'l1']) ack(peer, 2);
    drain(c);
    c.propose('x');
    expect(drain(c).filter((m) => m.type === 'appendEntries').length).toBe(3);
    // The learner stores the entry first; the voters' acks then commit it.
    ack('l1', 3);
    expect(drain(c)).toEqual([]);
    ack('s2', 3);
    const news = drain(c).filter((m) => m.type === 'appendEntries');
    expect(c.status().commitIndex).toBe(3);
    expect(news.map((m) => m.to).sort()).toEqual(['l1', 's2']);
    for (const m of news) expect([m.entries.length, m.leaderCommit]).toEqual([0, 3]);
  });

  it('a follower installs a snapshot from the leader and discards its stale log', () => {
    const c = core('s2', {
      hardState: { term: 1, votedFor: null, commitIndex: 1 },
      entries: [config(['s1', 's2', 's3']), { index: 2, term: 1, kind: 'command', data: 'stale' }],
    });
    const snapshot = {
      index: 10,
      term: 3,
      config: { voters: ['s1', 's2', 's3'], learners: [] },
      data: 'state@10',
    };
    c.step({ type: 'installSnapshot', from: 's1', to: 's2', term: 3, snapshot });
    const ready = c.ready();
    expect(ready.snapshot).toEqual(snapshot);
    expect(ready.messages).toEqual([
      expect.objectContaining({ type: 'appendEntriesResponse', success: true, matchIndex: 10 }),
    ]);
    c.advance(ready);
    expect(c.status()).toMatchObject({
      commitIndex: 10,
      appliedIndex: 10,
      lastIndex: 10,
      snapshotIndex: 10,
      leaderId: 's1',
    });
  });
});

describe('Raft simulation: scenarios', () => {
  it('elects exactly one leader in a healthy 3-node cluster and replicates', () => {
    const sim = new RaftSimulation({
      seed: 7,
      nodeCount: 3,
      dropRate: 0,
      duplicateRate: 0,
      delayTicksMax: 1,
    });
    sim.run(60);
    expect(sim.leader()).not.toBeNull();
    for (let i = 0; i < 10; i++) sim.propose();
    sim.run(20);
    const applied = [...sim.nodes.values()].map((n) => n.applied.length);
    expect(applied).toEqual([10, 10, 10]);
  });

  it('split vote: candidates that split the vote retry with new random timeouts until one wins', () => {
    // Four voters, all timing out together, leave no majority for anyone in the first round on most seeds.
    for (let seed = 1; seed <= 20; seed++) {
      const sim = new RaftSimulation({ seed, nodeCount: 4, dropRate: 0, duplicateRate: 0, delayTicksMax: 2 });
      sim.run(200);
      expect(sim.leader(), `seed ${seed}`).not.toBeNull();
    }
  });

  it('a partitioned leader steps down (check-quorum), the majority elects a new one, the old one rejoins', () => {
    const sim = new RaftSimulation({
      seed: 11,
      nodeCount: 5,
      dropRate: 0,
      duplicateRate: 0,
      delayTicksMax: 1,
    });
    sim.run(60);
    const first = sim.leader()!;
    const rest = [...sim.nodes.keys()].filter((id) => id !== first);
    sim.partition([[first], rest]);
    sim.run(80);
    expect(sim.leader()).not.toBe(first);
    expect(sim.core(first)!.status().role).not.toBe('leader');
    sim.propose();
    sim.run(20);
    sim.heal();
    sim.run(60);
    const lastApplied = [...sim.nodes.values()].map((n) => n.appliedIndex);
    expect(new Set(lastApplied).size).toBe(1);
    sim.checkConverged();
  });

  it('pre-vote: a node returning from isolation does not depose a healthy leader', () => {
    const sim = new RaftSimulation({
      seed: 5,
      nodeCount: 3,
      dropRate: 0,
      duplicateRate: 0,
      delayTicksMax: 1,
    });
    sim.run(60);
    const leader = sim.leader()!;
    const term = sim.core(leader)!.status().term;
    const loner = [...sim.nodes.keys()].find((id) => id !== leader)!;
    sim.partition([[loner], [...sim.nodes.keys()].filter((id) => id !== loner)]);
    sim.run(200);
    sim.heal();
    sim.run(60);
    expect(sim.leader()).toBe(leader);
    expect(sim.core(leader)!.status().term).toBe(term);
  });

  it('a crashed leader whose connections were reset is replaced in a few ticks, not an election timeout', () => {
    const afterCrash = (reset: boolean, seed: number): number => {
      const sim = new RaftSimulation({ seed, nodeCount: 5, dropRate: 0, duplicateRate: 0, delayTicksMax: 1 });
      sim.run(60);
      const leader = sim.leader()!;
      sim.propose();
      sim.run(5);
      if (reset) sim.crashWithReset(leader);
      else sim.crash(leader);
      for (let ticks = 1; ticks <= 100; ticks++) {
        sim.step();
        const next = sim.leader();
        if (next !== null && next !== leader) {
          sim.propose();
          sim.run(10);
          sim.checkConverged();
          return ticks;
        }
      }
      throw new Error(`seed ${seed}: no new leader within 100 ticks`);
    };
    const timeouts: number[] = [];
    const resets: number[] = [];
    for (let seed = 1; seed <= 40; seed++) {
      timeouts.push(afterCrash(false, seed));
      resets.push(afterCrash(true, seed));
    }
    const median = (values: number[]): number => [...values].sort((a, b) => a - b)[values.length >> 1] ?? 0;
    // The timeout path waits out at least one election timeout (10 ticks here); the reset path, a tick, a
    // pre-vote and a vote round (a message takes a tick here), with no split vote.
    expect(Math.min(...timeouts)).toBeGreaterThanOrEqual(10);
    expect(Math.max(...resets)).toBeLessThanOrEqual(8);
    expect(median(resets) * 2).toBeLessThan(median(timeouts));
  });

  it('a follower told wrongly that the leader is gone does not depose it', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const sim = new RaftSimulation({ seed, nodeCount: 3, dropRate: 0, duplicateRate: 0, delayTicksMax: 1 });
      sim.run(60);
      const leader = sim.leader()!;
      const term = sim.core(leader)!.status().term;
      const follower = [...sim.nodes.keys()].find((id) => id !== leader)!;
      sim.tellUnreachable(follower, leader);
      sim.run(40);
      expect(sim.leader(), `seed ${seed}`).toBe(leader);
      expect(sim.core(leader)!.status().term, `seed ${seed}`).toBe(term);
      expect(sim.core(follower)!.status().leaderId, `seed ${seed}`).toBe(leader);
    }
  });

  it('leadership transfer hands over to a caught-up voter without a lost write', () => {
    const sim = new RaftSimulation({
      seed: 3,
      nodeCount: 3,
      dropRate: 0,
      duplicateRate: 0,
      delayTicksMax: 1,
    });
    sim.run(60);
    const leader = sim.leader()!;
    for (let i = 0; i < 5; i++) sim.propose();
    const target = [...sim.nodes.keys()].find((id) => id !== leader)!;
    sim.core(leader)!.transferLeadership(target);
    sim.run(30);
    expect(sim.leader()).toBe(target);
    sim.propose();
    sim.run(20);
    sim.checkConverged();
    expect(sim.acknowledged.size).toBe(6);
  });

  it('a node far behind catches up through a snapshot after the others compacted', () => {
    const sim = new RaftSimulation({
      seed: 9,
      nodeCount: 3,
      dropRate: 0,
      duplicateRate: 0,
      delayTicksMax: 1,
      compactEvery: 10,
    });
    sim.run(60);
    const leader = sim.leader()!;
    const laggard = [...sim.nodes.keys()].find((id) => id !== leader)!;
    sim.crash(laggard);
    for (let i = 0; i < 60; i++) {
      sim.propose();
      sim.run(2);
    }
    sim.run(20);
    expect(sim.core(leader)!.status().snapshotIndex).toBeGreaterThan(20);
    sim.start(laggard);
    sim.run(60);
    expect(sim.core(laggard)!.status().snapshotIndex).toBeGreaterThan(20);
    sim.checkConverged();
  });

  it('grows from three voters to five and shrinks back, one server at a time', () => {
    const sim = new RaftSimulation({
      seed: 21,
      nodeCount: 5,
      votersInitial: 3,
      dropRate: 0,
      duplicateRate: 0,
      delayTicksMax: 1,
    });
    sim.run(60);
    const steps: ((c: { voters: readonly string[]; learners: readonly string[] }) => {
      voters: string[];
      learners: string[];
    })[] = [
      (c) => ({ voters: [...c.voters], learners: ['n4'] }),
      (c) => ({ voters: [...c.voters, 'n4'], learners: [] }),
      (c) => ({ voters: [...c.voters], learners: ['n5'] }),
      (c) => ({ voters: [...c.voters, 'n5'], learners: [] }),
      (c) => ({ voters: c.voters.filter((id) => id !== 'n1'), learners: [] }),
    ];
    for (const change of steps) {
      expect(sim.changeConfig(change)).toBe(true);
      sim.propose();
      sim.run(40);
    }
    const status = sim.core(sim.leader()!)!.status();
    expect([...status.config.voters].sort()).toEqual(['n2', 'n3', 'n4', 'n5']);
    sim.checkConverged();
  });
});

describe('Raft simulation: random faults', () => {
  // Many seeds of random faults. The simulation asserts safety after every tick and throws on any
  // violation; the seed is in the test name, and `RaftSimulation({ seed })` replays it exactly.
  const seedCount = Number(process.env['SHOAL_RAFT_SEEDS'] ?? 1000);
  const seeds = Array.from({ length: seedCount }, (_, i) => i + 1);
  it.each(seeds)(
    'seed %i: safe under drops, duplicates, reordering, partitions, crashes (with and without a connection reset), torn writes, compaction and reconfiguration; live after',
    (seed) => {
      const sim = new RaftSimulation({
        seed,
        nodeCount: 5,
        votersInitial: seed % 2 === 0 ? 5 : 3,
        dropRate: 0.1,
        duplicateRate: 0.05,
        delayTicksMax: 3,
        compactEvery: 8,
        // Half the seeds tick as RaftService does (only when due, catching up before inputs).
        lazyTicks: seed % 4 >= 2,
      });
      const ids = [...sim.nodes.keys()];
      for (let round = 0; round < 25; round++) {
        const roll = sim.random.next();
        if (roll < 0.12) {
          const shuffled = [...ids].sort(() => sim.random.next() - 0.5);
          const cutAt = 1 + sim.random.int(0, ids.length - 1);
          sim.partition([shuffled.slice(0, cutAt), shuffled.slice(cutAt)]);
        } else if (roll < 0.18) {
          sim.cutOneWay(ids[sim.random.int(0, ids.length)]!, ids[sim.random.int(0, ids.length)]!);
        } else if (roll < 0.3) {
          sim.heal();
          // Now and then a node wrongly hears that another is gone (a connection reset by a flaky network).
          if (sim.random.next() < 0.3)
            sim.tellUnreachable(ids[sim.random.int(0, ids.length)]!, ids[sim.random.int(0, ids.length)]!);
        } else if (roll < 0.4) {
          const victim = ids[sim.random.int(0, ids.length)]!;
          const how = sim.random.next();
          if (how < 0.33) sim.crash(victim);
          else if (how < 0.67) sim.crashMidWrite(victim);
          // As SIGKILL on a host: its peers see its connections reset at once.
          else sim.crashWithReset(victim);
          sim.run(sim.random.int(1, 20));
          sim.start(victim);
        } else if (roll < 0.5) {
          // One-server membership change: add a learner, promote one, or remove a voter (keeping three).
          sim.changeConfig((c) => {
            const outside = ids.filter((id) => !c.voters.includes(id) && !c.learners.includes(id));
            const learner = c.learners[0];
            if (learner !== undefined)
              return { voters: [...c.voters, learner], learners: c.learners.slice(1) };
            if (outside.length > 0 && sim.random.next() < 0.6)
              return { voters: [...c.voters], learners: [outside[0]!] };
            if (c.voters.length > 3)
              return {
                voters: c.voters.filter((_, i) => i !== sim.random.int(0, c.voters.length)),
                learners: [...c.learners],
              };
            return null;
          });
        }
        for (let i = 0; i < 3; i++) sim.propose();
        sim.run(sim.random.int(5, 30));
      }
      // Liveness: once faults stop, a leader emerges and every member applies every acknowledged entry.
      sim.heal();
      for (const id of ids) if (!sim.isUp(id)) sim.start(id);
      let converged = false;
      for (let attempt = 0; attempt < 20 && !converged; attempt++) {
        sim.run(30);
        if (sim.propose()) {
          sim.run(40);
          try {
            sim.checkConverged();
            converged = true;
          } catch {
            converged = false;
          }
        }
      }
      expect(converged, `seed ${seed}: the cluster did not converge after faults stopped`).toBe(true);
    },
  );
});
