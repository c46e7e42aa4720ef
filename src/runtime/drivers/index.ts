/**
 * Task drivers: the public face of src/runtime/drivers. Other modules import only from here.
 */
export {
  type Driver,
  type DriverHealth,
  type PortBinding,
  type ExitResult,
  type StartRequest,
  type TaskEvent,
  type TaskEventType,
  type TaskHandle,
} from './driver.ts';
export {
  followChunkBytesMax,
  followTaskLogs,
  logRotationDefault,
  logsLimitBytesDefault,
  readTaskLogs,
  RotatingLogFile,
  stderrLogFileName,
  stdoutLogFileName,
  type FollowTaskLogsOptions,
  type LogChunk,
  type LogRotation,
  type LogStream,
  type ReadTaskLogsOptions,
  type TaskLogs,
} from './logs.ts';
export {
  cgroupParentDefault,
  createExecDriver,
  execPathDefault,
  shimCommandDefault,
  type ExecDriverInit,
} from './exec.ts';
export { detectCgroupMounts, parseCgroupMountInfo, type CgroupMounts } from './cgroups.ts';
export { runShim, shimArgument } from './shim.ts';
export {
  containerNamePrefix,
  containerSharedDirName,
  createDockerDriver,
  dockerSocketPathDefault,
  dockerSocketPathFromEnv,
  managedLabel,
  nodeLabel,
  taskLabel,
  type DockerDriverInit,
} from './docker.ts';
