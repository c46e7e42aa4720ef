/**
 * The allocator as a pure function from a snapshot of the cluster to a plan. No I/O, no clock; the same
 * snapshot (in any order) always gives the same plan. The leader uses the incremental Allocator instead
 * (kept in step by src/cluster/scheduler.ts), and tests check that both plan alike. For the policy, see
 * allocator.ts.
 */
import { Allocator } from './allocator.ts';
import type { AllocatorInput, Plan } from './types.ts';

/** One plan from a snapshot: builds the indexes, plans once, throws them away. */
export function allocate(input: AllocatorInput): Plan {
  return Allocator.planSnapshot(input);
}
