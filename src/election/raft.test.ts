import { describe, expect, it } from 'vitest';
import { seededRandom } from '../shared/random.ts';
import { RaftCore } from './raft.ts';
import { RaftSimulation } from './simulation.ts';
import type { RaftMessage } from './types.ts';

function single(): RaftCore {
  const core = new RaftCore({
    id: 'a',
    electionTicks: 10,
    heartbeatTicks: 2,
    random: seededRandom(1),
    entriesPerMessageMax: 64,
    bytesPerMessageMax: 1 << 20,
    hardState: { term: 0, votedFor: null, commitIndex: 0 },
    entries: [],
  });
  core.bootstrap();
  return core;
}

function drainAll(core: RaftCore): RaftMessage[] {
  const sent: RaftMessage[] = [];
  while (core.hasReady()) {
    const ready = core.ready();
    sent.push(...ready.messages);
    core.advance(ready);
  }
  return sent;
}

describe('RaftCore', () => {
  it('a bootstrapped single node elects itself and commits proposals', () => {
    const core = single();
    for (let i = 0; i < 25 && core.status().role !== 'leader'; i++) {
      core.tick();
      drainAll(core);
    }
    expect(core.status().role).toBe('leader');
    const { index } = core.propose('x');
    drainAll(core);
    expect(core.status().commitIndex).toBe(index);
    expect(core.status().appliedIndex).toBe(index);
  });

  it('refuses proposals on a follower with NOT_LEADER', () => {
    const core = single();
    expect(() => core.propose('x')).toThrow(/not the leader/);
  });

  it('a node that is no voter never campaigns', () => {
    const core = new RaftCore({
      id: 'fresh',
      electionTicks: 10,
      heartbeatTicks: 2,
      random: seededRandom(2),
      entriesPerMessageMax: 64,
      bytesPerMessageMax: 1 << 20,
      hardState: { term: 0, votedFor: null, commitIndex: 0 },
      entries: [],
    });
    for (let i = 0; i < 100; i++) core.tick();
    expect(drainAll(core)).toEqual([]);
    expect(core.status().role).toBe('follower');
  });
});

describe('Raft simulation', () => {
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
    const applied = [...sim.nodes.values()].map((n) => n.applied.filter((e) => e.kind === 'command').length);
    expect(applied).toEqual([10, 10, 10]);
  });

  it('a partitioned leader steps down and the majority elects a new one; the old one rejoins', () => {
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
    const second = sim.leader();
    expect(second).not.toBe(first);
    expect(sim.nodes.get(first)!.core!.status().role).not.toBe('leader');
    sim.propose();
    sim.run(20);
    sim.heal();
    sim.run(60);
    const lastApplied = [...sim.nodes.values()].map((n) => n.applied.at(-1)?.index);
    expect(new Set(lastApplied).size).toBe(1);
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
    const leaderTerm = sim.nodes.get(leader)!.core!.status().term;
    const loner = [...sim.nodes.keys()].find((id) => id !== leader)!;
    sim.partition([[loner], [...sim.nodes.keys()].filter((id) => id !== loner)]);
    sim.run(200);
    sim.heal();
    sim.run(60);
    expect(sim.leader()).toBe(leader);
    expect(sim.nodes.get(leader)!.core!.status().term).toBe(leaderTerm);
  });

  // Many seeds of random faults: the simulation asserts safety after every tick and throws on violation.
  const seeds = Array.from({ length: 200 }, (_, i) => i + 1);
  it.each(seeds)(
    'seed %i: safety holds under drops, duplicates, partitions and crashes; liveness after',
    (seed) => {
      const sim = new RaftSimulation({
        seed,
        nodeCount: seed % 2 === 0 ? 5 : 3,
        dropRate: 0.1,
        duplicateRate: 0.05,
        delayTicksMax: 3,
      });
      const ids = [...sim.nodes.keys()];
      for (let round = 0; round < 30; round++) {
        const roll = sim.random.next();
        if (roll < 0.15) {
          const shuffled = [...ids].sort(() => sim.random.next() - 0.5);
          const cutAt = 1 + sim.random.int(0, ids.length - 1);
          sim.partition([shuffled.slice(0, cutAt), shuffled.slice(cutAt)]);
        } else if (roll < 0.3) {
          sim.heal();
        } else if (roll < 0.4) {
          const victim = ids[sim.random.int(0, ids.length)]!;
          sim.crash(victim);
          sim.run(sim.random.int(1, 20));
          sim.start(victim);
        }
        for (let i = 0; i < 3; i++) sim.propose();
        sim.run(sim.random.int(5, 30));
      }
      // Liveness: once faults stop, a leader emerges and commits a new proposal everywhere.
      sim.heal();
      for (const id of ids) if (!sim.nodes.get(id)!.core) sim.start(id);
      let committed = false;
      for (let attempt = 0; attempt < 20 && !committed; attempt++) {
        sim.run(30);
        if (sim.propose()) {
          sim.run(30);
          const leader = sim.leader();
          const commit = leader ? sim.nodes.get(leader)!.core!.status().commitIndex : 0;
          committed = [...sim.nodes.values()].every(
            (n) => (n.applied.at(-1)?.index ?? 0) >= commit && commit > 0,
          );
        }
      }
      expect(committed, `seed ${seed}: cluster did not converge after faults stopped`).toBe(true);
    },
  );
});
