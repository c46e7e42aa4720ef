import { describe, expect, it } from 'vitest';
import { describeFaultTolerance, type FaultToleranceInput } from './fault-tolerance.ts';
import type { ClusterConfig, PeerProgress } from './types.ts';
import { defaultVoterPolicy, type VoterCandidate } from './voters.ts';

const nowMs = 100_000;

function alive(id: string, forMs = 60_000): VoterCandidate {
  return { id, state: 'alive', aliveSinceMs: nowMs - forMs, lastHeardMs: nowMs };
}

function dead(id: string, forMs: number): VoterCandidate {
  return { id, state: 'dead', aliveSinceMs: null, lastHeardMs: nowMs - forMs };
}

function warning(
  config: ClusterConfig,
  members: VoterCandidate[],
  extra: Partial<FaultToleranceInput> = {},
): string | null {
  return describeFaultTolerance({
    config,
    leaderId: config.voters[0] ?? null,
    members,
    progress: [],
    commitIndex: 100,
    nowMs,
    policy: defaultVoterPolicy,
    nameOf: (id) => id,
    ...extra,
  });
}

describe('describeFaultTolerance', () => {
  it('a fresh cluster: one voter, and when its learners are promoted', () => {
    const config = { voters: ['n0'], learners: ['n1', 'n2'] };
    expect(warning(config, [alive('n0'), alive('n1', 200), alive('n2', 100)])).toBe(
      '1 voter: losing n0 stops the cluster; n1, n2 become voters in ~1 s',
    );
    const slower = { ...defaultVoterPolicy, promotionStableMs: 3000 };
    expect(warning(config, [alive('n0'), alive('n1', 400), alive('n2', 300)], { policy: slower })).toBe(
      '1 voter: losing n0 stops the cluster; n1, n2 become voters in ~3 s',
    );
  });

  it('names nodes through the caller, and says when a learner still has to catch up', () => {
    const config = { voters: ['id0'], learners: ['id1', 'id2'] };
    const progress: PeerProgress[] = [
      { id: 'id1', matchIndex: 100, nextIndex: 101, recentlyActive: true },
      { id: 'id2', matchIndex: 3, nextIndex: 4, recentlyActive: true },
    ];
    const names = new Map([
      ['id0', 'n0'],
      ['id1', 'n1'],
      ['id2', 'n2'],
    ]);
    expect(
      warning(config, [alive('id0'), alive('id1'), alive('id2')], {
        progress,
        nameOf: (id) => names.get(id) ?? id,
      }),
    ).toBe('1 voter: losing n0 stops the cluster; n1, n2 become voters in ~1 s once n2 catches up');
  });

  it('one or two nodes: how many to add', () => {
    expect(warning({ voters: ['n0'], learners: [] }, [alive('n0')])).toBe(
      '1 voter: losing n0 stops the cluster; add 2 nodes to survive the loss of one',
    );
    // Two nodes keep one voter: a second would be one more node whose loss stops the cluster.
    expect(warning({ voters: ['n0'], learners: ['n1'] }, [alive('n0'), alive('n1')])).toBe(
      '1 voter: losing n0 stops the cluster; add 1 node to survive the loss of one',
    );
  });

  it('halfway through a promotion', () => {
    expect(
      warning({ voters: ['n0', 'n1'], learners: ['n2'] }, [alive('n0'), alive('n1'), alive('n2', 500)]),
    ).toBe('2 voters: losing n0 or n1 stops the cluster; n2 becomes a voter in ~1 s');
  });

  it('nothing to say while the cluster survives the loss of any one node', () => {
    expect(
      warning(
        { voters: ['n0', 'n1', 'n2'], learners: [] },
        ['n0', 'n1', 'n2'].map((id) => alive(id)),
      ),
    ).toBeNull();
    const five = ['n0', 'n1', 'n2', 'n3', 'n4'];
    expect(
      warning({ voters: five, learners: [] }, [...five.slice(0, 4).map((id) => alive(id)), dead('n4', 1000)]),
    ).toBeNull();
  });

  it('a dead voter: a learner takes its place at once, or a node to add', () => {
    // The planner promotes a learner as soon as a voter is down, and demotes the dead one to keep the
    // count odd; deadVoterRemovalMs only delays removing it from the configuration altogether.
    const config = { voters: ['n0', 'n1', 'n2'], learners: ['n3'] };
    expect(warning(config, [alive('n0'), alive('n1'), dead('n2', 10_000), alive('n3')])).toBe(
      '3 voters, 1 down (n2): losing n0 or n1 stops the cluster; n3 becomes a voter in ~1 s',
    );
    expect(
      warning({ voters: ['n0', 'n1', 'n2'], learners: [] }, [
        alive('n0'),
        alive('n1'),
        { ...alive('n2'), state: 'left' },
      ]),
    ).toBe('3 voters, 1 down (n2): losing n0 or n1 stops the cluster; add 1 node to survive the loss of one');
    // Four voters, one dead: demoting it leaves three healthy ones.
    expect(
      warning({ voters: ['n0', 'n1', 'n2', 'n3'], learners: [] }, [
        alive('n0'),
        alive('n1'),
        alive('n2'),
        dead('n3', 1000),
      ]),
    ).toBe('4 voters, 1 down (n3): losing n0, n1 or n2 stops the cluster; n3 leaves the voters in ~1 s');
  });

  it('no quorum: only the voters coming back help', () => {
    const config = { voters: ['n0', 'n1', 'n2'], learners: ['n3'] };
    const members = [alive('n0'), dead('n1', 5000), dead('n2', 5000), alive('n3')];
    expect(warning(config, members, { leaderId: null })).toBe(
      '3 voters, 2 down (n1, n2): no quorum, so nothing can be written until n1 or n2 is back',
    );
    const five = { voters: ['n0', 'n1', 'n2', 'n3', 'n4'], learners: [] };
    expect(
      warning(five, [alive('n0'), ...['n1', 'n2', 'n3', 'n4'].map((id) => dead(id, 1000))], {
        leaderId: null,
      }),
    ).toBe(
      '5 voters, 4 down (n1, n2, n3, n4): no quorum, so nothing can be written until 2 of n1, n2, n3, n4 are back',
    );
  });

  it('on a follower: no leader known, no progress, and members alive since an unknown time', () => {
    const config = { voters: ['n0'], learners: ['n1', 'n2'] };
    // n1's stability period is taken to start now, so n2 (alive for a minute) goes first.
    const members = [alive('n0'), { ...alive('n1'), aliveSinceMs: null }, alive('n2')];
    expect(warning(config, members, { leaderId: null })).toBe(
      '1 voter: losing n0 stops the cluster; n2, n1 become voters in ~1 s',
    );
    const stable = { ...defaultVoterPolicy, promotionStableMs: 4000 };
    expect(warning(config, members, { leaderId: null, policy: stable })).toBe(
      '1 voter: losing n0 stops the cluster; n2, n1 become voters in ~4 s',
    );
  });
});
