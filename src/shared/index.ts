export { assert, unreachable, AssertionError } from './assert.ts';
export {
  ShoalError,
  invalidArgument,
  isShoalError,
  isShoalErrorCode,
  errorMessage,
  shoalErrorCodes,
  type ShoalErrorCode,
} from './errors.ts';
export { createLogger, silentLogger, type Logger, type LogLevel, type LogFields } from './log.ts';
export { seededRandom, systemRandom, type Random } from './random.ts';
export {
  callRpc,
  decodeJson,
  encodeJson,
  handleRpc,
  jsonStream,
  wireMessageBytesMax,
  type RpcHandler,
  type RpcReply,
} from './wire.ts';
export { writeFileAtomic } from './files.ts';
export { Semaphore } from './semaphore.ts';
export { gibibyte, kibibyte, mebibyte } from './units.ts';
export { taskDrivers, type TaskDriver } from './drivers.ts';
export { deviceKindsMax } from './devices.ts';
export { shoalVersion } from './version.ts';
