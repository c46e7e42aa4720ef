export { assert, unreachable, AssertionError } from './assert.ts';
export { ShoalError, invalidArgument, isShoalError, errorMessage, type ShoalErrorCode } from './errors.ts';
export { createLogger, silentLogger, type Logger, type LogLevel, type LogFields } from './log.ts';
export { seededRandom, systemRandom, type Random } from './random.ts';
