/**
 * Automatic voter management, as a pure function the leader calls: no node is configured as a server.
 * New members join as learners; healthy, caught-up learners that have been alive for a stability period
 * are promoted up to an odd target (default 5, fewer on small clusters); voters silent for too long are
 * removed, and learners promoted in their place. One change at a time, so a quorum is never lost to it.
 */
import type { ClusterConfig, NodeId, PeerProgress } from './types.ts';

export interface VoterPolicy {
  /** Voters wanted when enough healthy nodes exist; odd. */
  readonly targetVoters: number;
  /** A voter silent this long is removed from the voter set. */
  readonly deadVoterRemovalMs: number;
  /** A learner must have been alive this long before it is promoted. */
  readonly promotionStableMs: number;
  /** A learner is caught up when it is at most this many entries behind the commit index. */
  readonly catchUpLagEntries: number;
}

export const defaultVoterPolicy: VoterPolicy = {
  targetVoters: 5,
  deadVoterRemovalMs: 30_000,
  /*
   * 1 s, no longer than a learner needs: three agents started together on loopback (2 cores, 7 runs), a
   * newcomer was a learner 10-260 ms after the leader saw it alive, and caught up (applied up to the
   * leader's commit index, polled every 25 ms) within 350 ms of that. The 5 s this used to be left a
   * fresh cluster with one voter for 5.0-5.5 s, and losing the first node then stopped it for good.
   * The period only has to show the member is not flapping: peers probe each member about once per
   * membership probe interval (200 ms) whatever the cluster size, so 1 s is ~5 answered probes; a
   * newcomer SIGKILLed was suspect at the leader 38 ms later (its connections reset), and suspect is not
   * promoted. A member that flaps more slowly is not caught by any short period; deadVoterRemovalMs
   * deals with it.
   */
  promotionStableMs: 1_000,
  catchUpLagEntries: 64,
};

export interface VoterCandidate {
  readonly id: NodeId;
  /** alive, suspect, dead or left, as membership sees it. */
  readonly state: string;
  /** Since when it has been continuously alive (null when not alive). */
  readonly aliveSinceMs: number | null;
  /** When it was last heard from. */
  readonly lastHeardMs: number;
}

export interface VoterInput {
  readonly leaderId: NodeId;
  readonly config: ClusterConfig;
  readonly members: readonly VoterCandidate[];
  readonly progress: readonly PeerProgress[];
  readonly commitIndex: number;
  readonly nowMs: number;
  readonly policy: VoterPolicy;
}

/** The next configuration to propose, or null if the current one should stay. */
export function planVoterChange(input: VoterInput): ClusterConfig | null {
  const { config, policy, nowMs, leaderId } = input;
  const byId = new Map(input.members.map((m) => [m.id, m]));
  const alive = (id: NodeId): boolean => id === leaderId || byId.get(id)?.state === 'alive';
  const gone = (id: NodeId): boolean => {
    if (id === leaderId) return false;
    const member = byId.get(id);
    if (!member) return false;
    if (member.state === 'left') return true;
    return member.state === 'dead' && nowMs - member.lastHeardMs >= policy.deadVoterRemovalMs;
  };
  const matchOf = (id: NodeId): number => input.progress.find((p) => p.id === id)?.matchIndex ?? 0;
  const without = (ids: readonly NodeId[], id: NodeId): NodeId[] => ids.filter((x) => x !== id);

  // 1. Members that left, or voters dead past the removal delay, go first (one at a time).
  const goneVoter = config.voters.find(gone);
  if (goneVoter !== undefined)
    return { voters: without(config.voters, goneVoter), learners: [...config.learners] };
  const goneLearner = config.learners.find(gone);
  if (goneLearner !== undefined)
    return { voters: [...config.voters], learners: without(config.learners, goneLearner) };

  // 2. New live members join as learners.
  const inConfig = new Set([...config.voters, ...config.learners]);
  const newcomer = input.members.find((m) => m.state === 'alive' && !inConfig.has(m.id));
  if (newcomer) return { voters: [...config.voters], learners: [...config.learners, newcomer.id] };

  // 3. Aim for the largest odd voter count the healthy nodes allow, up to the target.
  const healthy = [...inConfig].filter(alive).length;
  const desired = Math.max(1, Math.min(policy.targetVoters, healthy % 2 === 1 ? healthy : healthy - 1));
  const healthyVoters = config.voters.filter(alive).length;
  if (healthyVoters < desired || (config.voters.length < desired + 1 && config.voters.length % 2 === 0)) {
    const promotable = config.learners
      .filter((id) => {
        const member = byId.get(id);
        return (
          member?.state === 'alive' &&
          member.aliveSinceMs !== null &&
          nowMs - member.aliveSinceMs >= policy.promotionStableMs &&
          matchOf(id) >= input.commitIndex - policy.catchUpLagEntries
        );
      })
      .sort((a, b) => matchOf(b) - matchOf(a) || (a < b ? -1 : 1))[0];
    if (promotable !== undefined && config.voters.length < policy.targetVoters) {
      return { voters: [...config.voters, promotable], learners: without(config.learners, promotable) };
    }
  }
  // 4. An even voter set with no learner to promote: demote the least caught-up healthy follower to keep it odd.
  if (config.voters.length % 2 === 0 && config.voters.length > desired) {
    const demote = config.voters
      .filter((id) => id !== leaderId)
      .sort((a, b) => Number(alive(a)) - Number(alive(b)) || matchOf(a) - matchOf(b) || (a < b ? -1 : 1))[0];
    if (demote !== undefined)
      return { voters: without(config.voters, demote), learners: [...config.learners, demote] };
  }
  return null;
}
