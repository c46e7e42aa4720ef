export { allocate } from './allocate.ts';
export {
  Allocator,
  affinitiesMax,
  comparePending,
  defaultNamespace,
  portsPerTaskMax,
  preemptionPriorityGapDefault,
  reservationsMaxDefault,
  spreadValuesMax,
} from './allocator.ts';
export { formatRequest } from './resources.ts';
export { compileConstraints, matchesAll } from './labels.ts';
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
