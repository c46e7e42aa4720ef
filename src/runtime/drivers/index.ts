/**
 * Task drivers: the public face of src/runtime/drivers. Other modules import only from here.
 */
export {
  logsLimitBytesDefault,
  readTaskLogs,
  stderrLogFileName,
  stdoutLogFileName,
  type Driver,
  type DriverHealth,
  type ExitResult,
  type ReadTaskLogsOptions,
  type StartRequest,
  type TaskHandle,
  type TaskLogs,
} from './driver.ts';
export {
  createExecDriver,
  execPathDefault,
  exitedWhileAgentDownReason,
  type ExecDriverInit,
} from './exec.ts';
export {
  containerNamePrefix,
  createDockerDriver,
  dockerSocketPathDefault,
  dockerSocketPathFromEnv,
  managedLabel,
  taskLabel,
  type DockerDriverInit,
} from './docker.ts';
