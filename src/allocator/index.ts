export {
  allocate,
  comparePending,
  formatRequest,
  type AllocatorInput,
  type AllocatorNode,
  type AllocatorTask,
  type Placement,
  type Plan,
  type Resources,
  type Waiting,
} from './allocate.ts';
