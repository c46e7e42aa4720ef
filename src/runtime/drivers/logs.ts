/**
 * A task's output on disk: stdout.log and stderr.log in its taskDir, each size-capped and rotated
 * (stdout.log → stdout.log.1 → stdout.log.2 …, the oldest dropped), so a chatty task cannot fill the node's
 * disk. Every driver writes through RotatingLogFile; readTaskLogs and followTaskLogs read across rotation.
 *
 * Imports only node built-ins and shared/errors.ts: the exec shim loads this file, and a shim that pulled in
 * the rest of shoal (libp2p, dockerode) would cost every task tens of milliseconds and megabytes.
 */
import { watch, type FSWatcher } from 'node:fs';
import { open, readdir, rename, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { ShoalError } from '../../shared/errors.ts';

/** File names inside a task's taskDir. Every driver appends there, so logs outlive the agent and the container. */
export const stdoutLogFileName = 'stdout.log';
export const stderrLogFileName = 'stderr.log';

export type LogStream = 'stdout' | 'stderr';

const logFileNames: Readonly<Record<LogStream, string>> = {
  stdout: stdoutLogFileName,
  stderr: stderrLogFileName,
};

export interface LogRotation {
  /** A log file is rotated before it would grow past this many bytes. */
  fileBytesMax: number;
  /** Files kept per stream, the live one included: at most fileBytesMax × filesMax bytes per stream. */
  filesMax: number;
}

export const logRotationDefault: Readonly<LogRotation> = { fileBytesMax: 10 * 1024 * 1024, filesMax: 3 };
/** More rotated files than this are not looked for: a bound on the directory scan, far above any sane filesMax. */
const rotatedFilesMax = 1000;

export function checkLogRotation(rotation: LogRotation): void {
  if (!Number.isSafeInteger(rotation.fileBytesMax) || rotation.fileBytesMax < 1) {
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `log fileBytesMax must be a positive integer, got ${rotation.fileBytesMax}`,
    );
  }
  if (
    !Number.isSafeInteger(rotation.filesMax) ||
    rotation.filesMax < 1 ||
    rotation.filesMax > rotatedFilesMax
  ) {
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `log filesMax must be an integer from 1 to ${rotatedFilesMax}, got ${rotation.filesMax}`,
    );
  }
}

/** The path of a stream's file: index 0 is the live file, 1 the newest rotated one, and so on. */
function logFilePath(taskDir: string, stream: LogStream, index: number): string {
  const base = join(taskDir, logFileNames[stream]);
  return index === 0 ? base : `${base}.${index}`;
}

/**
 * Appends to a log file and rotates it at the size cap. One writer per file: two writers rotating the same
 * file would each rename the other's. Writes are kept whole within a file where they fit; one larger than
 * the cap is split.
 */
export class RotatingLogFile extends Writable {
  private readonly path: string;
  private readonly rotation: LogRotation;
  private file: FileHandle | null = null;
  private sizeBytes = 0;

  constructor(path: string, rotation: LogRotation = logRotationDefault) {
    checkLogRotation(rotation);
    super();
    this.path = path;
    this.rotation = { ...rotation };
  }

  override _construct(callback: (error?: Error | null) => void): void {
    this.openLive().then(() => callback(), callback);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.append(chunk).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.closeLive().then(() => callback(), callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.closeLive().then(
      () => callback(error),
      () => callback(error),
    );
  }

  private async openLive(): Promise<void> {
    // O_APPEND: a restarted task, or a leftover writer, adds to the file rather than overwriting it.
    const file = await open(this.path, 'a');
    this.file = file;
    this.sizeBytes = (await file.stat()).size;
  }

  private async closeLive(): Promise<void> {
    const file = this.file;
    this.file = null;
    await file?.close();
  }

  private async append(chunk: Buffer): Promise<void> {
    const { fileBytesMax } = this.rotation;
    let offsetBytes = 0;
    // A write that fits in a fresh file but not in what is left of this one starts a new file.
    if (this.sizeBytes > 0 && this.sizeBytes + chunk.length > fileBytesMax && chunk.length <= fileBytesMax) {
      await this.rotate();
    }
    while (offsetBytes < chunk.length) {
      if (this.sizeBytes >= fileBytesMax) await this.rotate();
      const file = this.file;
      if (file === null) throw new Error(`log file ${this.path} is closed`);
      const piece = chunk.subarray(offsetBytes, offsetBytes + (fileBytesMax - this.sizeBytes));
      let writtenBytes = 0;
      while (writtenBytes < piece.length) {
        const { bytesWritten } = await file.write(piece, writtenBytes, piece.length - writtenBytes);
        writtenBytes += bytesWritten;
      }
      this.sizeBytes += piece.length;
      offsetBytes += piece.length;
    }
  }

  private async rotate(): Promise<void> {
    // Close before renaming: a follower that sees a new live file knows the old one is complete.
    await this.closeLive();
    const { filesMax } = this.rotation;
    for (let index = filesMax - 1; index >= 1; index -= 1) {
      const from = index === 1 ? this.path : `${this.path}.${index - 1}`;
      await rename(from, `${this.path}.${index}`).catch((error: unknown) => {
        if (!isMissing(error)) throw error;
      });
    }
    // filesMax 1: nothing is kept, the live file starts over.
    const file = await open(this.path, filesMax === 1 ? 'w' : 'a');
    this.file = file;
    this.sizeBytes = 0;
  }
}

/**
 * How much of each log readTaskLogs returns when the caller names no limit: the tail a user usually wants,
 * and small enough to send in one API answer.
 */
export const logsLimitBytesDefault = 1024 * 1024;

export interface ReadTaskLogsOptions {
  /** Return at most the last tailBytes of each stream, across rotated files; defaults to logsLimitBytesDefault. */
  tailBytes?: number;
}

export interface TaskLogs {
  stdout: Buffer;
  stderr: Buffer;
}

/** Reads the tail of a task's stdout and stderr, across rotated files. A file not written yet reads as empty. */
export async function readTaskLogs(taskDir: string, options: ReadTaskLogsOptions = {}): Promise<TaskLogs> {
  const tailBytes = options.tailBytes ?? logsLimitBytesDefault;
  if (!Number.isSafeInteger(tailBytes) || tailBytes < 0) {
    throw new ShoalError('INVALID_ARGUMENT', `tailBytes must be a non-negative integer, got ${tailBytes}`);
  }
  const [stdout, stderr] = await Promise.all([
    readStreamTail(taskDir, 'stdout', tailBytes),
    readStreamTail(taskDir, 'stderr', tailBytes),
  ]);
  return { stdout, stderr };
}

interface OpenLogFile {
  index: number;
  file: FileHandle;
  sizeBytes: number;
  inode: number;
}

/**
 * Opens every file of a stream, newest first, as one consistent set: the handles stay valid across renames,
 * and a rotation while they were being opened (a file found under another name afterwards) makes it retry.
 */
async function openStreamFiles(taskDir: string, stream: LogStream): Promise<OpenLogFile[]> {
  const attemptsMax = 5;
  for (let attempt = 1; ; attempt += 1) {
    const indexes = await streamFileIndexes(taskDir, stream);
    const opened: OpenLogFile[] = [];
    try {
      for (const index of indexes) {
        const file = await open(logFilePath(taskDir, stream, index), 'r').catch((error: unknown) => {
          if (isMissing(error)) return null;
          throw error;
        });
        if (file === null) continue;
        const info = await file.stat();
        opened.push({ index, file, sizeBytes: info.size, inode: info.ino });
      }
      if (attempt === attemptsMax || (await stillNamed(taskDir, stream, opened))) return opened;
    } catch (error) {
      await closeAll(opened);
      throw error;
    }
    await closeAll(opened);
  }
}

async function stillNamed(taskDir: string, stream: LogStream, opened: OpenLogFile[]): Promise<boolean> {
  for (const entry of opened) {
    const info = await stat(logFilePath(taskDir, stream, entry.index)).catch(() => null);
    if (info?.ino !== entry.inode) return false;
  }
  return true;
}

async function closeAll(opened: OpenLogFile[]): Promise<void> {
  await Promise.all(opened.map((entry) => entry.file.close().catch(() => undefined)));
}

/** The indexes of a stream's files that exist, newest (0, the live file) first. */
async function streamFileIndexes(taskDir: string, stream: LogStream): Promise<number[]> {
  let names: string[];
  try {
    names = await readdir(taskDir);
  } catch (error) {
    if (isMissing(error)) return [];
    throw error;
  }
  const base = logFileNames[stream];
  const indexes: number[] = [];
  for (const name of names) {
    if (name === base) indexes.push(0);
    else if (name.startsWith(`${base}.`)) {
      const index = Number(name.slice(base.length + 1));
      if (Number.isSafeInteger(index) && index >= 1 && index <= rotatedFilesMax) indexes.push(index);
    }
  }
  return indexes.sort((a, b) => a - b);
}

async function readStreamTail(taskDir: string, stream: LogStream, tailBytes: number): Promise<Buffer> {
  const opened = await openStreamFiles(taskDir, stream);
  try {
    const parts: Buffer[] = [];
    let leftBytes = tailBytes;
    for (const entry of opened) {
      if (leftBytes === 0) break;
      // A live file may still grow: read the size taken when it was opened, so the parts join up.
      const lengthBytes = Math.min(entry.sizeBytes, leftBytes);
      parts.unshift(await readRange(entry.file, entry.sizeBytes - lengthBytes, lengthBytes));
      leftBytes -= lengthBytes;
    }
    return Buffer.concat(parts);
  } finally {
    await closeAll(opened);
  }
}

async function readRange(file: FileHandle, positionBytes: number, lengthBytes: number): Promise<Buffer> {
  const buffer = Buffer.alloc(lengthBytes);
  let readBytes = 0;
  while (readBytes < lengthBytes) {
    const { bytesRead } = await file.read(
      buffer,
      readBytes,
      lengthBytes - readBytes,
      positionBytes + readBytes,
    );
    if (bytesRead === 0) break; // truncated under us: return what was there
    readBytes += bytesRead;
  }
  return buffer.subarray(0, readBytes);
}

export interface LogChunk {
  stream: LogStream;
  data: Buffer;
}

export interface FollowTaskLogsOptions {
  /** Ends the iteration (normally, without an error). Without one, it runs until the consumer breaks out. */
  signal?: AbortSignal;
  /**
   * How much output already written to replay first, per stream, counted back from the current end across
   * rotated files (like `tail -c N -f`). 0 (the default) follows new output only; Infinity replays all kept.
   */
  fromBytes?: number;
  /** How often files are looked at when no change notification arrives. Default 500 ms. */
  pollIntervalMs?: number;
}

/** The largest chunk followTaskLogs yields. */
export const followChunkBytesMax = 64 * 1024;
const followPollIntervalMsDefault = 500;

/**
 * Tails a task's stdout and stderr, across rotation, until options.signal aborts: for `shoal logs -f`. Waits for
 * files that do not exist yet. Chunks of one stream come in order; the two streams interleave as they are read.
 */
export async function* followTaskLogs(
  taskDir: string,
  options: FollowTaskLogsOptions = {},
): AsyncGenerator<LogChunk, void, undefined> {
  const fromBytes = options.fromBytes ?? 0;
  if (!(fromBytes === Infinity || (Number.isSafeInteger(fromBytes) && fromBytes >= 0))) {
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `fromBytes must be a non-negative integer or Infinity, got ${fromBytes}`,
    );
  }
  const pollIntervalMs = options.pollIntervalMs ?? followPollIntervalMsDefault;
  const signal = options.signal;
  const wakeup = new Wakeup(taskDir, signal);
  const followers = [new StreamFollower(taskDir, 'stdout'), new StreamFollower(taskDir, 'stderr')];
  try {
    for (const follower of followers) {
      const replay = await follower.begin(fromBytes);
      if (replay.length > 0) yield* chunked(follower.stream, replay);
    }
    while (!isAborted(signal)) {
      let progressed = false;
      for (const follower of followers) {
        for (;;) {
          const data = await follower.readMore();
          if (data === null) break;
          progressed = true;
          yield { stream: follower.stream, data };
          if (isAborted(signal)) return;
        }
      }
      if (!progressed) await wakeup.wait(pollIntervalMs);
    }
  } finally {
    wakeup.close();
    for (const follower of followers) await follower.close();
  }
}

/** A function, not `signal?.aborted`, so the compiler does not assume it cannot change across a yield. */
function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

function* chunked(stream: LogStream, data: Buffer): Generator<LogChunk> {
  for (let offsetBytes = 0; offsetBytes < data.length; offsetBytes += followChunkBytesMax) {
    yield { stream, data: data.subarray(offsetBytes, offsetBytes + followChunkBytesMax) };
  }
}

/** Wakes a follower when the task directory changes (inotify), with polling as the fallback. */
class Wakeup {
  private watcher: FSWatcher | null = null;
  private changed = false;
  private wake: (() => void) | null = null;
  private readonly taskDir: string;
  private readonly signal: AbortSignal | undefined;

  constructor(taskDir: string, signal: AbortSignal | undefined) {
    this.taskDir = taskDir;
    this.signal = signal;
    this.tryWatch();
  }

  private tryWatch(): void {
    if (this.watcher !== null) return;
    try {
      const watcher = watch(this.taskDir, { persistent: true });
      watcher.on('change', () => {
        this.changed = true;
        this.wake?.();
      });
      // A removed directory or an exhausted inotify budget: polling still works.
      watcher.on('error', () => {
        watcher.close();
        if (this.watcher === watcher) this.watcher = null;
      });
      this.watcher = watcher;
    } catch {
      // the directory does not exist yet: retried on the next wait
    }
  }

  async wait(timeoutMs: number): Promise<void> {
    this.tryWatch();
    if (this.changed || this.signal?.aborted === true) {
      this.changed = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.signal?.removeEventListener('abort', done);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.signal?.addEventListener('abort', done, { once: true });
      this.wake = done;
    });
    this.changed = false;
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
  }
}

/** Follows one stream: holds the file it reads, and moves on to newer ones when the writer rotates it. */
class StreamFollower {
  readonly stream: LogStream;
  private readonly taskDir: string;
  private current: { file: FileHandle; inode: number; positionBytes: number } | null = null;
  /** Newer files to read after the current one (rotated since we opened it), oldest first. */
  private queued: { file: FileHandle; inode: number }[] = [];

  constructor(taskDir: string, stream: LogStream) {
    this.taskDir = taskDir;
    this.stream = stream;
  }

  /** Opens the live file at its end and returns the last fromBytes already written (across rotation). */
  async begin(fromBytes: number): Promise<Buffer> {
    const opened = await openStreamFiles(this.taskDir, this.stream);
    const live = opened.find((entry) => entry.index === 0);
    const parts: Buffer[] = [];
    let leftBytes = fromBytes;
    try {
      for (const entry of opened) {
        if (leftBytes <= 0) break;
        const lengthBytes = Math.min(entry.sizeBytes, leftBytes);
        parts.unshift(await readRange(entry.file, entry.sizeBytes - lengthBytes, lengthBytes));
        leftBytes -= lengthBytes;
      }
    } finally {
      await closeAll(opened.filter((entry) => entry !== live));
    }
    if (live !== undefined) {
      this.current = { file: live.file, inode: live.inode, positionBytes: live.sizeBytes };
    }
    return Buffer.concat(parts);
  }

  /** The next chunk written since the last call, or null when there is nothing new yet. */
  async readMore(): Promise<Buffer | null> {
    if (this.current === null && !(await this.openLive())) return null;
    for (;;) {
      const current = this.current;
      if (current === null) return null;
      const buffer = Buffer.alloc(followChunkBytesMax);
      const { bytesRead } = await current.file.read(buffer, 0, buffer.length, current.positionBytes);
      if (bytesRead > 0) {
        current.positionBytes += bytesRead;
        return buffer.subarray(0, bytesRead);
      }
      // At the end of the file we hold. If the writer has rotated it away, it is complete: move on.
      if (!(await this.advance())) return null;
    }
  }

  private async openLive(): Promise<boolean> {
    const file = await open(logFilePath(this.taskDir, this.stream, 0), 'r').catch((error: unknown) => {
      if (isMissing(error)) return null;
      throw error;
    });
    if (file === null) return false;
    this.current = { file, inode: (await file.stat()).ino, positionBytes: 0 };
    return true;
  }

  /** Switches to the next newer file if ours was rotated; false when ours is still the live one. */
  private async advance(): Promise<boolean> {
    const current = this.current;
    if (current === null) return false;
    if (this.queued.length === 0) {
      const liveInfo = await stat(logFilePath(this.taskDir, this.stream, 0)).catch(() => null);
      // No live file: mid-rotation (renamed, not yet recreated). Ours is still the newest there is.
      if (liveInfo === null || liveInfo.ino === current.inode) return false;
      await this.queueNewerThan(current.inode);
      // The files rotated after ours may already be gone (more rotations than files kept): then all that
      // is left is newer, and queueNewerThan queued it.
    }
    const next = this.queued.shift();
    await current.file.close();
    this.current = next === undefined ? null : { ...next, positionBytes: 0 };
    return next !== undefined || (await this.openLive());
  }

  /** Opens, oldest first, the files written after the one with `inode`. */
  private async queueNewerThan(inode: number): Promise<void> {
    const opened = await openStreamFiles(this.taskDir, this.stream);
    const ours = opened.findIndex((entry) => entry.inode === inode);
    const newer = ours === -1 ? opened : opened.slice(0, ours);
    await closeAll(opened.filter((entry) => !newer.includes(entry)));
    this.queued = newer.reverse().map((entry) => ({ file: entry.file, inode: entry.inode }));
  }

  async close(): Promise<void> {
    await this.current?.file.close().catch(() => undefined);
    this.current = null;
    await Promise.all(this.queued.map((entry) => entry.file.close().catch(() => undefined)));
    this.queued = [];
  }
}

function isMissing(error: unknown): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === 'ENOENT';
}
