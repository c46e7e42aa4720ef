/** The lease table: what each side decides at each time since the last renewal. */
import { describe, expect, it } from 'vitest';
import {
  freshForPlacement,
  leaseExpired,
  leaseStanding,
  placementLeaseFreshMs,
  replaceGraceMs,
  taskLeaseMs,
} from './lease.ts';

const renewedMs = 1_000_000;

describe('the task lease', () => {
  it.each([
    // since renewal,          agent stops tasks, leader's standing, new tasks placed
    [0, false, 'held', true],
    [placementLeaseFreshMs - 1, false, 'held', true],
    [placementLeaseFreshMs, false, 'held', false],
    [taskLeaseMs - 1, false, 'held', false],
    [taskLeaseMs, false, 'lapsing', false],
    [taskLeaseMs + 1, true, 'lapsing', false],
    [taskLeaseMs + replaceGraceMs - 1, true, 'lapsing', false],
    [taskLeaseMs + replaceGraceMs, true, 'gone', false],
  ] as const)('%i ms after a renewal', (sinceMs, agentStops, standing, placeable) => {
    const nowMs = renewedMs + sinceMs;
    expect(leaseExpired(renewedMs, nowMs)).toBe(agentStops);
    expect(leaseStanding(renewedMs, nowMs)).toBe(standing);
    expect(freshForPlacement(renewedMs, nowMs)).toBe(placeable);
  });

  it('never lets the leader replace tasks an agent may still run', () => {
    // The agent counts from when it sent the renewal, the leader from when it arrived (later or equal):
    // whenever the leader says "gone", the agent has stopped its tasks.
    for (let sinceMs = 0; sinceMs <= taskLeaseMs + 2 * replaceGraceMs; sinceMs += 50) {
      const nowMs = renewedMs + sinceMs;
      if (leaseStanding(renewedMs, nowMs) === 'gone') expect(leaseExpired(renewedMs, nowMs)).toBe(true);
    }
  });

  it('treats a node that never renewed as gone, and not placeable', () => {
    expect(leaseStanding(undefined, renewedMs)).toBe('gone');
    expect(freshForPlacement(undefined, renewedMs)).toBe(false);
  });
});
