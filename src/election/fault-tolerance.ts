/**
 * Whether the cluster survives the loss of one more node, as one line `shoal status` can show. Pure:
 * takes the configuration, the members as membership sees them and the time; the caller resolves names.
 * When it does not survive, the line also says what comes next, by running planVoterChange forward in
 * time (the same rules the leader applies, so the two cannot disagree): which learners become voters and
 * when, or how many nodes to add.
 */
import type { NodeId } from './types.ts';
import { planVoterChange, type VoterCandidate, type VoterInput } from './voters.ts';

export interface FaultToleranceInput extends Omit<VoterInput, 'leaderId'> {
  /** The leader, if one is known (it counts as alive). */
  readonly leaderId: NodeId | null;
  /**
   * The leader's replication progress; on another node pass [] and learners are taken as caught up.
   * A member alive with aliveSinceMs null is taken as alive since nowMs.
   */
  readonly progress: VoterInput['progress'];
  /** A node's name for the message (its id if unknown). */
  readonly nameOf: (id: NodeId) => string;
}

/** Configuration changes the forward run applies at one moment before giving up (each is one server). */
const changesPerStepMax = 32;

/**
 * The warning to show when losing one more node would leave the voters without a quorum, e.g.
 * "1 voter: losing n0 stops the cluster; n1, n2 become voters in ~1 s"; null when the cluster survives
 * the loss of any one node.
 */
export function describeFaultTolerance(input: FaultToleranceInput): string | null {
  const { config, nameOf } = input;
  const isUp = upCheck(input.leaderId, input.members);
  const up = config.voters.filter(isUp).map(nameOf);
  const down = config.voters.filter((id) => !isUp(id)).map(nameOf);
  const quorum = Math.floor(config.voters.length / 2) + 1;
  if (up.length - quorum >= 1) return null;

  const plural = config.voters.length === 1 ? '' : 's';
  const downPart = down.length === 0 ? '' : `, ${down.length} down (${down.join(', ')})`;
  const head = `${config.voters.length} voter${plural}${downPart}`;
  if (up.length < quorum) {
    // Without a quorum the leader commits no configuration change either: only the voters coming back help.
    const missing = quorum - up.length;
    const back =
      missing === down.length
        ? `${list(down, 'and')} ${missing === 1 ? 'is' : 'are'} back`
        : missing === 1
          ? `${list(down, 'or')} is back`
          : `${missing} of ${down.join(', ')} are back`;
    return `${head}: no quorum, so nothing can be written until ${back}`;
  }
  return `${head}: losing ${list(up, 'or')} stops the cluster; ${outlook(input)}`;
}

/** What the leader will do about it, or what the operator must. */
function outlook(input: FaultToleranceInput): string {
  const { config, nameOf, nowMs, policy } = input;
  const projected = project(input);
  if (projected !== null) {
    const inS = `in ~${Math.max(1, Math.ceil((projected.atMs - nowMs) / 1000))} s`;
    const added = projected.config.voters.filter((id) => !config.voters.includes(id));
    if (added.length === 0) {
      const removed = config.voters.filter((id) => !projected.config.voters.includes(id)).map(nameOf);
      return `${list(removed, 'and')} ${removed.length === 1 ? 'leaves' : 'leave'} the voters ${inS}`;
    }
    const lagging = added.filter((id) => lags(input, id)).map(nameOf);
    const caveat =
      lagging.length === 0 ? '' : ` once ${list(lagging, 'and')} catch${lagging.length === 1 ? 'es' : ''} up`;
    const becomes = added.length === 1 ? 'becomes a voter' : 'become voters';
    return `${added.map(nameOf).join(', ')} ${becomes} ${inS}${caveat}`;
  }
  // Three healthy voters survive the loss of one: count the nodes up, in the configuration or joining.
  const isUp = upCheck(input.leaderId, input.members);
  const ids = new Set([...config.voters, ...config.learners, ...input.members.map((m) => m.id)]);
  const healthy = [...ids].filter(isUp).length;
  if (healthy >= 3) return `the voter target (${policy.targetVoters}) leaves no spare voter`;
  const missing = 3 - healthy;
  return `add ${missing} node${missing === 1 ? '' : 's'} to survive the loss of one`;
}

/**
 * Runs planVoterChange forward: at now, then at each moment a learner's stability period or a dead
 * voter's removal delay ends, applying every change it plans at once, taking alive learners as caught up.
 * Returns the first configuration that survives the loss of a node, and when; null if none does.
 */
function project(input: FaultToleranceInput): { config: VoterInput['config']; atMs: number } | null {
  const { policy, nowMs } = input;
  const leaderId = input.leaderId ?? input.config.voters.find(upCheck(null, input.members)) ?? null;
  if (leaderId === null) return null;
  const members: VoterCandidate[] = input.members.map((m) =>
    m.state === 'alive' && m.aliveSinceMs === null ? { ...m, aliveSinceMs: nowMs } : m,
  );
  const isUp = upCheck(leaderId, members);
  const moments = new Set<number>([nowMs]);
  for (const member of members) {
    if (member.aliveSinceMs !== null) moments.add(member.aliveSinceMs + policy.promotionStableMs);
    if (member.state === 'dead') moments.add(member.lastHeardMs + policy.deadVoterRemovalMs);
  }
  let config = input.config;
  for (const atMs of [...moments].filter((t) => t >= nowMs).sort((a, b) => a - b)) {
    for (let change = 0; change < changesPerStepMax; change++) {
      const ids = new Set([...config.voters, ...config.learners, ...members.map((m) => m.id)]);
      const next = planVoterChange({
        ...input,
        leaderId,
        config,
        members,
        // Caught up, every one of them: how long catching up takes is not known here.
        progress: [...ids].map((id) => ({
          id,
          matchIndex: input.commitIndex,
          nextIndex: input.commitIndex + 1,
          recentlyActive: true,
        })),
        nowMs: atMs,
      });
      if (next === null) break;
      config = next;
    }
    const up = config.voters.filter(isUp).length;
    if (up - (Math.floor(config.voters.length / 2) + 1) >= 1) return { config, atMs };
  }
  return null;
}

function upCheck(leaderId: NodeId | null, members: readonly VoterCandidate[]): (id: NodeId) => boolean {
  const states = new Map(members.map((m) => [m.id, m.state]));
  return (id) => id === leaderId || states.get(id) === 'alive';
}

/** True if the leader's progress shows `id` further behind than a promotion allows. */
function lags(input: FaultToleranceInput, id: NodeId): boolean {
  const progress = input.progress.find((p) => p.id === id);
  return progress !== undefined && progress.matchIndex < input.commitIndex - input.policy.catchUpLagEntries;
}

/** "a", "a or b", "a, b or c". */
function list(names: readonly string[], last: 'and' | 'or'): string {
  if (names.length <= 1) return names.join('');
  return `${names.slice(0, -1).join(', ')} ${last} ${names[names.length - 1] ?? ''}`;
}
