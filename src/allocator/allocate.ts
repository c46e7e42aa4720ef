/**
 * The allocator as a pure function from a snapshot of the cluster to a plan. No I/O, no clock; the same
 * snapshot (in any order) always gives the same plan. The leader uses the incremental Allocator instead
 * (kept in step by src/node/scheduler.ts), and tests check that both plan alike. For the policy, see
 * allocator.ts.
 */
import { Allocator } from './allocator.ts';
import type { AllocatorInput, Plan } from './types.ts';

export { comparePending } from './allocator.ts';
export { formatRequest } from './resources.ts';
export type {
  Affinity,
  AllocatorInput,
  AllocatorNode,
  AllocatorOptions,
  AllocatorTask,
  JobPolicy,
  LabelConstraint,
  NamespacePolicy,
  Placement,
  Plan,
  PlanOptions,
  Preemption,
  Reservation,
  Resources,
  RunningTask,
  Waiting,
} from './types.ts';

/** One plan from a snapshot: builds the indexes, plans once, throws them away. */
export function allocate(input: AllocatorInput): Plan {
  return Allocator.planSnapshot(input);
}
