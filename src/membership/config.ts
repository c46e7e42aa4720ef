/**
 * Membership's parameters, with units and the formulas that derive timeouts from them. N is the number
 * of members believed alive or suspect, this node included. LAN defaults; see defaultMembershipConfig.
 */
import { assert } from '../shared/assert.ts';

export interface MembershipConfig {
  /** Protocol period: one member is probed per period (× (localHealth + 1) when this node is unwell). */
  readonly probeIntervalMs: number;
  /** Wait for the direct ack before asking others to probe (× (localHealth + 1)). */
  readonly probeTimeoutMs: number;
  /**
   * After the ping-reqs go out, wait this much longer for an ack relayed by a helper (× (localHealth + 1))
   * before suspecting. Helpers nack after their own probeTimeoutMs, so it should exceed probeTimeoutMs.
   */
  readonly indirectProbeTimeoutMs: number;
  /** k: members asked to probe indirectly when a direct probe gets no ack. */
  readonly indirectChecks: number;
  /**
   * Suspicion timeout, as in memberlist:
   *   min = max(suspicionTimeoutFloorMs, suspicionMult × max(1, log10(N)) × probeIntervalMs)
   *   max = suspicionMaxTimeoutMult × min
   *   with c independent confirmations (other members that suspect it too), out of
   *   k = suspicionMult − 2 expected (0 when N − 2 < k):
   *   timeout(c) = max(min, max − (max − min) × log(c + 1) / log(k + 1))      (timeout(0) = max)
   * A suspect member not refuted within its timeout is declared dead. Like the probe timeouts, the
   * timeout is multiplied by (localHealth + 1) on a node that knows it is slow (Lifeguard).
   */
  readonly suspicionMult: number;
  readonly suspicionMaxTimeoutMult: number;
  /**
   * Lower bound of the suspicion timeout. It must exceed the longest pause a healthy node may take (a
   * GC pause, SIGSTOP, a starved VM) plus the time its refutation needs to spread: the formula alone
   * gives 0.8 s at N ≤ 10 with a 200-ms period, less than a one-second stall.
   */
  readonly suspicionTimeoutFloorMs: number;
  /**
   * A member whose current incarnation was first heard of less than joinGraceMs ago gets suspicion
   * timeouts × joinGraceMult. A process that just started is busy for a few seconds (loading, catching up
   * Raft's log, opening a connection to every peer) and answers late; one that dies in those seconds is
   * declared dead a few seconds later than usual.
   */
  readonly joinGraceMs: number;
  readonly joinGraceMult: number;
  /** Each update is piggybacked or gossiped retransmitMult × ceil(log10(N + 1)) times, then dropped. */
  readonly retransmitMult: number;
  /**
   * How often queued updates are gossiped to gossipFanout random members (besides piggybacking). A
   * state change is also pushed at once, but at most once per urgentGossipGapMs, so a burst of changes
   * (a join, a storm of suspicions on an overloaded machine) goes out in batches, not a message each.
   */
  readonly gossipIntervalMs: number;
  readonly gossipFanout: number;
  readonly urgentGossipGapMs: number;
  /** Updates per probe/ack/gossip message, and their total size in bytes of JSON. */
  readonly updatesPerMessageMax: number;
  readonly updateBytesPerMessageMax: number;
  /**
   * Full-state exchange (push-pull) with one random member every
   *   pushPullIntervalMs × (N ≤ 32 ? 1 : ceil(log2(N) − log2(32)) + 1)
   * (memberlist's scaling: the exchange grows with N, so it runs less often in large clusters).
   */
  readonly pushPullIntervalMs: number;
  /** How often a push-pull is tried with a random dead member, so a healed partition merges. */
  readonly reconnectIntervalMs: number;
  /** Dead and left members are forgotten after this long (until then they are listed and retried). */
  readonly deadMemberRetentionMs: number;
  /** Lifeguard's local health score is kept in [0, localHealthMax]. */
  readonly localHealthMax: number;
  /** Members this node keeps track of; records about more are ignored. */
  readonly membersMax: number;
  // ---- the shell (service.ts) ------------------------------------------------------------------------
  /**
   * An event-loop delay beyond this is a stall: pending timeouts are extended by it, and local health
   * drops by 1 + floor(delay / probeTimeoutMs), so a node that just froze stays cautious for a while.
   */
  readonly stallThresholdMs: number;
  /**
   * Connections this node keeps open for membership; beyond it the least recently used idle ones are
   * closed. A large cluster does not mean a full mesh: probes to others dial on demand.
   */
  readonly peerConnectionsMax: number;
  /** A dial to a probe target or gossip peer gives up after this long. */
  readonly dialTimeoutMs: number;
  /** A push-pull exchange gives up after this long. */
  readonly syncTimeoutMs: number;
}

/**
 * LAN defaults, chosen for: failure detection p50 ≤ 2 s and p99 ≤ 3 s at N = 50, and no false alarm
 * from a 1-s SIGSTOP or a CPU burst. At N = 50: min suspicion = max(1.5, 4 × 1.70 × 0.2) = 1.5 s,
 * max = 9 s, k = 2; each update is sent 8 times.
 */
export const defaultMembershipConfig: MembershipConfig = {
  probeIntervalMs: 200,
  probeTimeoutMs: 300,
  indirectProbeTimeoutMs: 400,
  indirectChecks: 3,
  suspicionMult: 4,
  suspicionMaxTimeoutMult: 6,
  suspicionTimeoutFloorMs: 1500,
  joinGraceMs: 10_000,
  joinGraceMult: 3,
  retransmitMult: 4,
  gossipIntervalMs: 200,
  gossipFanout: 3,
  urgentGossipGapMs: 50,
  updatesPerMessageMax: 16,
  updateBytesPerMessageMax: 16 * 1024,
  pushPullIntervalMs: 30_000,
  reconnectIntervalMs: 3000,
  deadMemberRetentionMs: 60 * 60 * 1000,
  localHealthMax: 8,
  membersMax: 10_000,
  stallThresholdMs: 150,
  peerConnectionsMax: 64,
  dialTimeoutMs: 2000,
  syncTimeoutMs: 5000,
};

export function validateConfig(config: MembershipConfig): void {
  for (const [key, value] of Object.entries(config)) {
    assert(typeof value === 'number' && Number.isFinite(value) && value >= 0, `${key} = ${value}`);
  }
  assert(config.probeIntervalMs > 0 && config.probeTimeoutMs > 0, 'probe timings must be positive');
  assert(config.suspicionMult >= 1 && config.suspicionMaxTimeoutMult >= 1, 'suspicion multipliers ≥ 1');
  assert(config.gossipFanout >= 1 && config.updatesPerMessageMax >= 1, 'gossip must send something');
}

export interface SuspicionTimeouts {
  readonly minMs: number;
  readonly maxMs: number;
  /** Confirmations expected before the timeout reaches its minimum. */
  readonly confirmationsExpected: number;
}

export function suspicionTimeouts(config: MembershipConfig, memberCount: number): SuspicionTimeouts {
  const nodeScale = Math.max(1, Math.log10(Math.max(1, memberCount)));
  const minMs = Math.max(
    config.suspicionTimeoutFloorMs,
    config.suspicionMult * nodeScale * config.probeIntervalMs,
  );
  const k = config.suspicionMult - 2;
  return {
    minMs,
    maxMs: config.suspicionMaxTimeoutMult * minMs,
    confirmationsExpected: memberCount - 2 < k ? 0 : Math.max(0, k),
  };
}

/** How long a suspicion lasts given `confirmations` independent accusers besides the first. */
export function suspicionTimeoutMs(timeouts: SuspicionTimeouts, confirmations: number): number {
  const k = timeouts.confirmationsExpected;
  if (k < 1) return timeouts.minMs;
  const fraction = Math.log(confirmations + 1) / Math.log(k + 1);
  const timeout = timeouts.maxMs - (timeouts.maxMs - timeouts.minMs) * fraction;
  return Math.max(timeouts.minMs, Math.floor(timeout));
}

export function retransmitLimit(config: MembershipConfig, memberCount: number): number {
  return config.retransmitMult * Math.ceil(Math.log10(memberCount + 1));
}

export function pushPullIntervalMs(config: MembershipConfig, memberCount: number): number {
  const threshold = 32;
  if (memberCount <= threshold) return config.pushPullIntervalMs;
  const multiplier = Math.ceil(Math.log2(memberCount) - Math.log2(threshold)) + 1;
  return config.pushPullIntervalMs * multiplier;
}
