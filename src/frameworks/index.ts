/**
 * Two-level scheduling after Mesos (issue #17): external schedulers ("frameworks") subscribe, are offered
 * the room the built-in scheduler leaves, and launch tasks on it. This is the pure core; README.md says how
 * the shell wires it. Durable records (registry.ts, commands.ts) apart from the leader's volatile offers
 * (offers.ts) and redelivery (delivery.ts); calls.ts decides each scheduler call.
 */
export { decideCall, type CallOutcome, type CallParts, type SchedulerCall } from './calls.ts';
export {
  decodeRegistrySnapshot,
  frameworkCommandSchemas,
  frameworkInfoSchema,
  newFrameworkId,
  resolveFrameworkInfo,
  validateFrameworkCommand,
  type FrameworkCommand,
  type FrameworkInfoInput,
  type FrameworkRecord,
  type RegistrySnapshot,
} from './commands.ts';
export { UpdateDelivery, type UpdateDeliveryInit } from './delivery.ts';
export { FrameworkError, frameworkErrorCodes, isFrameworkError, type FrameworkErrorCode } from './errors.ts';
export {
  builtInDemandsMax,
  failoverTimeoutMsDefault,
  failoverTimeoutMsMax,
  frameworkNameLengthMax,
  frameworkPriorityDefault,
  frameworksMax,
  heartbeatIntervalMsDefault,
  idLengthMax,
  offerCpuMillisMinDefault,
  offerMemoryBytesMinDefault,
  offerTimeoutMsDefault,
  offersPerCallMax,
  offersPerFrameworkMax,
  pendingUpdatesMax,
  reconcileTasksMax,
  refuseMsDefault,
  refuseMsMax,
  roleLengthMax,
  statusMessageLengthMax,
  tasksPerAcceptMax,
  tasksPerFrameworkMax,
  updateRetryMsInitial,
  updateRetryMsMax,
  userLengthMax,
} from './limits.ts';
export { OfferBook, type OfferBookInit, type Subscriber } from './offers.ts';
export {
  FrameworkRegistry,
  type FrameworkApplyResult,
  type FrameworkEffects,
  type FrameworkSummary,
  type FrameworkTaskLaunch,
  type KillTarget,
} from './registry.ts';
export {
  normalizeRanges,
  subtractRanges,
  type OfferResources,
  type PortRange,
  type TaskResources,
} from './resources.ts';
export {
  frameworkTaskStates,
  isTerminalState,
  type AcceptCall,
  type AcceptResult,
  type BuiltInDemand,
  type BuiltInHold,
  type FrameworkInfo,
  type FrameworkTaskState,
  type Launch,
  type LaunchTask,
  type Offer,
  type OfferNode,
  type OfferView,
  type SchedulerEvent,
  type StatusUpdate,
  type TaskStatus,
} from './types.ts';
