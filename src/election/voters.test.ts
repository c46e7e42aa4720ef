import { describe, expect, it } from 'vitest';
import type { ClusterConfig, PeerProgress } from './types.ts';
import { defaultVoterPolicy, planVoterChange, type VoterCandidate } from './voters.ts';

const policy = { ...defaultVoterPolicy, deadVoterRemovalMs: 10_000, promotionStableMs: 1_000 };

/** Drives a simulated cluster: nodes alive or dead over time, the leader applying each planned change. */
function settle(config: ClusterConfig, members: VoterCandidate[], nowMs: number): ClusterConfig {
  let current = config;
  for (let i = 0; i < 50; i++) {
    const progress: PeerProgress[] = members
      .filter((m) => m.id !== 'n1')
      .map((m) => ({
        id: m.id,
        matchIndex: m.state === 'alive' ? 100 : 0,
        nextIndex: 101,
        recentlyActive: m.state === 'alive',
      }));
    const next = planVoterChange({
      leaderId: 'n1',
      config: current,
      members,
      progress,
      commitIndex: 100,
      nowMs,
      policy,
    });
    if (!next) return current;
    // Every change differs from the last by one server's role.
    const changed = new Set([...current.voters, ...current.learners, ...next.voters, ...next.learners]);
    let differences = 0;
    for (const id of changed) {
      const before = current.voters.includes(id) ? 'v' : current.learners.includes(id) ? 'l' : '-';
      const after = next.voters.includes(id) ? 'v' : next.learners.includes(id) ? 'l' : '-';
      if (before !== after) differences++;
    }
    expect(differences).toBe(1);
    current = next;
  }
  throw new Error('did not settle');
}

const aliveMember = (id: string): VoterCandidate => ({
  id,
  state: 'alive',
  aliveSinceMs: 0,
  lastHeardMs: 100_000,
});

describe('planVoterChange', () => {
  it('grows from 1 to 7 nodes one at a time with odd voter counts, then replaces 2 lost voters: 5 healthy voters', () => {
    let config: ClusterConfig = { voters: ['n1'], learners: [] };
    const members: VoterCandidate[] = [aliveMember('n1')];
    const voterCounts: number[] = [];
    for (let n = 2; n <= 7; n++) {
      members.push(aliveMember(`n${n}`));
      config = settle(config, members, 100_000);
      voterCounts.push(config.voters.length);
    }
    expect(voterCounts).toEqual([1, 3, 3, 5, 5, 5]);
    expect(config.learners).toHaveLength(2);
    // Two voters (not the leader) die.
    const victims = config.voters.filter((id) => id !== 'n1').slice(0, 2);
    for (const victim of victims) {
      const index = members.findIndex((m) => m.id === victim);
      members[index] = { id: victim, state: 'dead', aliveSinceMs: null, lastHeardMs: 100_000 };
    }
    // Before the removal delay nothing changes; after it, they are replaced by the learners.
    expect(settle(config, members, 105_000)).toEqual(config);
    config = settle(config, members, 120_000);
    expect(config.voters).toHaveLength(5);
    for (const victim of victims) expect(config.voters).not.toContain(victim);
    expect(config.voters.every((id) => members.find((m) => m.id === id)?.state === 'alive')).toBe(true);
  });

  it('does not promote a learner before its stability period or while it lags', () => {
    const config: ClusterConfig = { voters: ['n1'], learners: ['n2', 'n3'] };
    const members = [aliveMember('n1'), { ...aliveMember('n2'), aliveSinceMs: 99_500 }, aliveMember('n3')];
    const progress: PeerProgress[] = [
      { id: 'n2', matchIndex: 100, nextIndex: 101, recentlyActive: true },
      { id: 'n3', matchIndex: 10, nextIndex: 11, recentlyActive: true },
    ];
    expect(
      planVoterChange({
        leaderId: 'n1',
        config,
        members,
        progress,
        commitIndex: 100,
        nowMs: 100_000,
        policy,
      }),
    ).toBeNull();
  });

  it('with the default policy, promotes the caught-up learners of a fresh cluster 1 s after they turn alive', () => {
    const fresh: ClusterConfig = { voters: ['n1'], learners: ['n2', 'n3'] };
    const members = [
      aliveMember('n1'),
      ...['n2', 'n3'].map((id) => ({ ...aliveMember(id), aliveSinceMs: 0 })),
    ];
    const progress: PeerProgress[] = ['n2', 'n3'].map((id) => ({
      id,
      matchIndex: 3,
      nextIndex: 4,
      recentlyActive: true,
    }));
    const plan = (nowMs: number): ClusterConfig | null =>
      planVoterChange({
        leaderId: 'n1',
        config: fresh,
        members,
        progress,
        commitIndex: 3,
        nowMs,
        policy: defaultVoterPolicy,
      });
    expect(plan(999)).toBeNull();
    expect(plan(1000)).toEqual({ voters: ['n1', 'n2'], learners: ['n3'] });
  });

  it('keeps the voter count odd when a voter leaves and no learner can replace it', () => {
    const config: ClusterConfig = { voters: ['n1', 'n2', 'n3'], learners: [] };
    const members = [aliveMember('n1'), aliveMember('n2'), { ...aliveMember('n3'), state: 'left' }];
    expect(settle(config, members, 100_000)).toEqual({ voters: ['n1'], learners: ['n2'] });
  });
});
