/**
 * The runtime: the agent that runs what the log assigns to this node, its upkeep timers, and the task
 * drivers. The public face of src/runtime; other modules import only from here.
 */
export {
  Agent,
  eventsFlushIntervalMs,
  garbageTasksPerPassMax,
  handlesFileName,
  leaseStopGraceMs,
  stopGraceMsDefault,
  taskDirRetentionMsDefault,
  type AgentInit,
  type GarbageReport,
  type TaskEventsBatch,
  type TaskReport,
} from './agent.ts';
export {
  Upkeep,
  driverHealthIntervalMs,
  garbageFirstDelayMs,
  garbageIntervalMs,
  type DriverFacts,
  type UpkeepInit,
} from './upkeep.ts';
export * from './drivers/index.ts';
export {
  DiskMonitor,
  diskCheckIntervalMsDefault,
  diskLimitVerdict,
  directoryUsageBytes,
  type DiskMonitorInit,
  type DiskWatch,
} from './disk.ts';
export { ImageStore, type ImageStoreInit, type StoredImage } from './images/index.ts';
export {
  checkOutputLineLengthMax,
  createCheckState,
  HealthMonitor,
  recordCheckResult,
  TaskHealthTracker,
  taskVerdict,
  type CheckResult,
  type CheckState,
  type CheckThresholds,
  type CheckVerdict,
  type HealthMonitorInit,
  type HealthTarget,
  type HealthUpdate,
  type TaskVerdict,
} from './health.ts';
