/**
 * Fifty-odd membership state machines on a simulated network, driven by a seeded scheduler: join,
 * failures, a slow node that refutes, a graceful leave, a partition that heals. Deterministic; a failure
 * replays from its seed.
 */
import { describe, expect, it } from 'vitest';
import { suspicionTimeouts } from './config.ts';
import { MembershipSimulation } from './simulation.ts';

const nodeCount = 50;
const ids = Array.from({ length: nodeCount }, (_, i) => `n${String(i + 1).padStart(2, '0')}`);
const seedNode = ids[0]!;

function cluster(seed: number, options: { dropRate?: number } = {}): MembershipSimulation {
  const sim = new MembershipSimulation({ seed, ...options });
  sim.start(seedNode);
  // Nodes join one after another through the first, 20 ms apart.
  for (const id of ids.slice(1)) {
    sim.start(id, seedNode);
    sim.runFor(20);
  }
  const converged = sim.runUntil(() => ids.every((id) => sim.allSee(id, 'alive')), 10_000);
  expect(converged, 'every node sees every node alive').not.toBeNull();
  // Past the grace that freshly started members get.
  sim.runFor(sim.config.joinGraceMs);
  return sim;
}

function deadDeclarations(sim: MembershipSimulation, sinceMs: number): string[] {
  return sim.transitionsTo('dead', sinceMs).map((t) => `${t.observer} declared ${t.subject} dead`);
}

describe(`membership on a simulated network of ${nodeCount} nodes`, () => {
  it('joins: within a second of the last join every node sees all alive; steady load per node is constant', () => {
    const sim = cluster(1);
    const before = sim.datagrams;
    const start = sim.now;
    sim.runFor(10_000);
    const perNodePerSecond = (sim.datagrams - before) / nodeCount / ((sim.now - start) / 1000);
    // One ping and one ack per probe period (200 ms), in and out: ~10 datagrams/s, plus little gossip.
    expect(perNodePerSecond).toBeGreaterThan(8);
    expect(perNodePerSecond).toBeLessThan(14);
    expect(deadDeclarations(sim, 0)).toEqual([]);
  });

  it('detects crashed nodes within 2 s and silent hosts within 3.5 s, on every survivor', () => {
    const sim = cluster(2);
    const crashes: number[] = [];
    const hangs: number[] = [];
    for (const [round, victim] of ids.slice(1, 9).entries()) {
      if (round % 2 === 0) sim.crash(victim);
      else sim.hang(victim);
      const tookMs = sim.runUntil(() => sim.allSee(victim, 'dead'), 10_000);
      expect(tookMs, `${victim} seen dead`).not.toBeNull();
      (round % 2 === 0 ? crashes : hangs).push(tookMs ?? Infinity);
      // It comes back with the next incarnation, and everyone sees it alive again.
      sim.start(victim, seedNode);
      expect(sim.runUntil(() => sim.allSee(victim, 'alive'), 5000)).not.toBeNull();
      expect(sim.core(seedNode).get(victim)?.record.incarnation).toBe(2);
      sim.runFor(2000);
    }
    // A crash resets connections, which prompts an immediate probe: the suspicion's minimum (1.5 s)
    // is most of it. A silent host is found by the round-robin probes first.
    expect(Math.max(...crashes)).toBeLessThan(2000);
    expect(Math.max(...hangs)).toBeLessThan(3500);
    // Nobody else was ever declared dead.
    const wronglyDead = sim.transitionsTo('dead').filter((t) => !ids.slice(1, 9).includes(t.subject));
    expect(wronglyDead).toEqual([]);
  });

  it('nodes paused for a second (SIGSTOP) are suspected, refute, and are never declared dead', () => {
    const sim = cluster(3);
    const since = sim.now;
    // Whether a pause is noticed depends on whether someone probes the node early in it (a probe sent
    // later is answered on resume): pause a few nodes in turn.
    const paused = ids.slice(17, 22);
    for (const slow of paused) {
      sim.pause(slow);
      sim.runFor(1000);
      sim.resume(slow);
      expect(sim.runUntil(() => sim.allSee(slow, 'alive'), 3000)).not.toBeNull();
      sim.runFor(3000);
    }
    sim.runFor(10_000);
    expect(deadDeclarations(sim, since)).toEqual([]);
    const suspected = paused.filter((id) =>
      sim.transitionsTo('suspect', since).some((t) => t.subject === id),
    );
    expect(suspected.length).toBeGreaterThan(0);
    for (const id of suspected) expect(sim.core(id).stats.refutations).toBeGreaterThan(0);
  });

  it('raises no false alarm under 1 % message loss', () => {
    const sim = cluster(4, { dropRate: 0.01 });
    sim.runFor(30_000);
    expect(deadDeclarations(sim, 0)).toEqual([]);
  });

  it('a graceful leave is "left" everywhere at once and never "dead"', () => {
    const sim = cluster(5);
    const leaver = ids[30]!;
    const since = sim.now;
    sim.leave(leaver);
    expect(sim.runUntil(() => sim.allSee(leaver, 'left', [leaver]), 1000)).not.toBeNull();
    sim.crash(leaver);
    sim.runFor(15_000);
    expect(sim.allSee(leaver, 'left', [leaver])).toBe(true);
    expect(deadDeclarations(sim, since)).toEqual([]);
  });

  it('after a partition heals, both sides merge and everyone is alive again', () => {
    const sim = cluster(6);
    const minority = ids.slice(40);
    const majority = ids.slice(0, 40);
    sim.partition(minority, majority);
    const max = suspicionTimeouts(sim.config, nodeCount).maxMs;
    sim.runFor(max + 5000);
    // The majority declares the minority dead. The minority, which sees most probes fail, doubts
    // itself (Lifeguard) and probes slowly, but it suspects the majority too; its own stay alive.
    expect(majority.every((id) => minority.every((m) => sim.view(id, m) === 'dead'))).toBe(true);
    const minorityView = minority.flatMap((id) => majority.map((m) => sim.view(id, m)));
    expect(minorityView.filter((state) => state !== 'alive').length).toBeGreaterThan(0);
    expect(minority.every((id) => minority.every((m) => sim.view(id, m) === 'alive'))).toBe(true);
    expect(sim.core(minority[0]!).localHealth).toBeGreaterThan(0);
    sim.heal();
    const merged = sim.runUntil(() => ids.every((id) => sim.allSee(id, 'alive')), 30_000);
    expect(merged, 'everyone alive everywhere after the heal').not.toBeNull();
    // And it stays so.
    const settled = sim.now;
    sim.runFor(10_000);
    expect(deadDeclarations(sim, settled)).toEqual([]);
  });

  it('replays exactly from its seed', () => {
    const run = (): string => {
      const sim = cluster(7);
      sim.crash(ids[5]!);
      sim.runFor(5000);
      return JSON.stringify(sim.transitions);
    };
    expect(run()).toBe(run());
  });
});

describe('membership on a simulated network beyond peerConnectionsMax', () => {
  const bigCount = 150;
  const bigIds = Array.from({ length: bigCount }, (_, i) => `m${String(i).padStart(3, '0')}`);

  function converged(seed: number): MembershipSimulation {
    const sim = new MembershipSimulation({ seed });
    sim.startConverged(bigIds);
    expect(bigIds.every((id) => sim.allSee(id, 'alive'))).toBe(true);
    return sim;
  }

  it('starts converged: no false alarm, bounded connections, constant load, push-pull replies without a digest', () => {
    const sim = converged(11);
    sim.runFor(5000);
    const before = { ...sim.traffic };
    sim.runFor(20_000);
    const seconds = 20;
    // One ping and one ack per probe period, as in a small cluster.
    const frames = (sim.traffic.frames - before.frames) / bigCount / seconds;
    expect(frames).toBeGreaterThan(9);
    expect(frames).toBeLessThan(11);
    // Push-pull every 30 s × 3 at N = 150: two messages each (request, and a reply that carries no
    // digest when both sides agree), so about one request's worth of digest per exchange.
    const syncs = sim.traffic.syncMessages - before.syncMessages;
    expect(syncs).toBeGreaterThan(0);
    const bytesPerSync = (sim.traffic.syncBytes - before.syncBytes) / syncs;
    const digestBytes = JSON.stringify(sim.core(bigIds[0]!).syncRequest()).length;
    expect(bytesPerSync).toBeLessThan(digestBytes * 0.6);
    expect(sim.transitions.filter((t) => t.to !== 'alive')).toEqual([]);
    for (const node of sim.nodes.values()) {
      expect(node.connections.size).toBeLessThanOrEqual(sim.config.peerConnectionsMax + 30);
    }
  });

  it('detects a crash on every survivor by probes alone (no out-of-turn probe beyond peerConnectionsMax)', () => {
    const sim = converged(12);
    sim.runFor(5000);
    for (const victim of bigIds.slice(1, 4)) {
      sim.crash(victim);
      const tookMs = sim.runUntil(() => sim.allSee(victim, 'dead'), 10_000);
      expect(tookMs, `${victim} seen dead`).not.toBeNull();
      // Someone probes it within about a period (N nodes each probe it once per N periods); then the
      // suspicion's minimum, max(1.5 s, 4 × log10(150) × 0.2 s) = 1.74 s, with confirmations.
      expect(tookMs).toBeLessThan(3500);
      sim.runFor(2000);
    }
    const wronglyDead = sim.transitionsTo('dead').filter((t) => !bigIds.slice(1, 4).includes(t.subject));
    expect(wronglyDead).toEqual([]);
  });
});
