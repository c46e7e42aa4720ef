export { allocate } from './allocate.ts';
export { Allocator } from './allocator.ts';
export {
  affinitiesMax,
  defaultNamespace,
  portMax,
  portsPerTaskMax,
  preemptionPriorityGapDefault,
  priorityMax,
  priorityMin,
  reservationsMaxDefault,
  spreadValuesMax,
} from './limits.ts';
export { comparePending } from './order.ts';
export { dominantShare, placementOrder, type QueueNamespace, type QueuedTask } from './queue-order.ts';
export { deviceKindsMax, formatRequest } from './resources.ts';
export { compileConstraints, matchesAll, patternLengthMax } from './labels.ts';
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
