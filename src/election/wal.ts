/**
 * The write-ahead log: Raft's entries and hard state, appended as checksummed records and fsynced before
 * the node acts on them. Record: u32 LE payload length, u32 LE CRC-32 of the payload, JSON payload.
 *
 * On open, a torn tail (a last record cut short or with a bad checksum, as a crash mid-write leaves) is
 * truncated away; a bad record followed by more data is corruption and is refused, naming file and offset.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { ShoalError, errorMessage } from '../shared/errors.ts';
import { writeFileAtomic } from '../shared/files.ts';
import type { HardState, LogEntry, Snapshot } from './types.ts';

export const walFileName = 'raft.wal';
export const snapshotFileName = 'snapshot.bin';
/** One record holds at most this many bytes of payload; bigger means the length field is corrupt. */
export const walRecordBytesMax = 64 * 1024 * 1024;
const headerBytes = 8;

type WalRecord =
  | {
      readonly t: 'hard';
      readonly term: number;
      readonly votedFor: string | null;
      readonly commitIndex: number;
    }
  | { readonly t: 'entries'; readonly entries: readonly LogEntry[] }
  | { readonly t: 'truncate'; readonly from: number }
  /** The log restarts after a snapshot at `index`: everything before is dropped. */
  | { readonly t: 'reset'; readonly index: number; readonly term: number };

export interface WalContents {
  readonly hardState: HardState;
  /** The index the log restarts after (the snapshot it follows); 0 for a log from the start. */
  readonly baseIndex: number;
  readonly entries: LogEntry[];
  /** Bytes cut from a torn tail on open; 0 when the file ended cleanly. */
  readonly tornBytes: number;
}

export class Wal {
  readonly path: string;
  private fd: number;
  /** Bytes in the file; the shell compacts when the log grows. */
  sizeBytes: number;

  private constructor(path: string, fd: number, sizeBytes: number) {
    this.path = path;
    this.fd = fd;
    this.sizeBytes = sizeBytes;
  }

  /** Opens (creating if needed) the WAL in `dir` and returns it with what it holds. */
  static open(dir: string): { wal: Wal; contents: WalContents } {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, walFileName);
    const fd = openSync(path, 'a+');
    let contents: WalContents;
    try {
      contents = replay(path, fd);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    return { wal: new Wal(path, fd, readFileSync(path).length), contents };
  }

  /**
   * Replaces the whole file with a log that restarts after `baseIndex`: hard state and the entries kept.
   * Written to a new file, fsynced and renamed over the old one, so a crash leaves one or the other.
   */
  rewrite(hardState: HardState, baseIndex: number, baseTerm: number, entries: readonly LogEntry[]): void {
    const temporary = `${this.path}.tmp`;
    const records: WalRecord[] = [{ t: 'reset', index: baseIndex, term: baseTerm }];
    if (entries.length > 0) records.push({ t: 'entries', entries });
    records.push({ t: 'hard', ...hardState });
    const buffer = Buffer.concat(records.map(encodeRecord));
    writeFileAtomic(temporary, buffer);
    closeSync(this.fd);
    renameSync(temporary, this.path);
    syncDirectory(this.path);
    this.fd = openSync(this.path, 'a+');
    this.sizeBytes = buffer.length;
  }

  /** Appends what one Raft Ready asks to persist, as one write, then fsyncs. */
  persist(hardState: HardState | null, truncateFrom: number | null, entries: readonly LogEntry[]): void {
    const records: WalRecord[] = [];
    if (truncateFrom !== null) records.push({ t: 'truncate', from: truncateFrom });
    if (entries.length > 0) records.push({ t: 'entries', entries });
    if (hardState) records.push({ t: 'hard', ...hardState });
    if (records.length === 0) return;
    const buffer = Buffer.concat(records.map(encodeRecord));
    try {
      let written = 0;
      while (written < buffer.length) written += writeSync(this.fd, buffer, written);
      fsyncSync(this.fd);
    } catch (error) {
      // A full disk (ENOSPC) or an I/O error: cut what was half written so the log stays clean, and
      // let the caller retry the same records later.
      try {
        ftruncateSync(this.fd, this.sizeBytes);
      } catch {
        // If even that fails, the torn tail is cut on the next open.
      }
      throw new ShoalError(
        'UNAVAILABLE',
        `cannot write ${this.path}: ${errorMessage(error)}; free space in the data dir`,
        {
          cause: error,
        },
      );
    }
    this.sizeBytes += buffer.length;
  }

  close(): void {
    closeSync(this.fd);
  }
}

export function encodeRecord(record: WalRecord): Buffer {
  const payload = Buffer.from(JSON.stringify(record), 'utf8');
  if (payload.length > walRecordBytesMax) {
    throw new ShoalError('TOO_LARGE', `a WAL record of ${payload.length} bytes exceeds ${walRecordBytesMax}`);
  }
  const header = Buffer.alloc(headerBytes);
  header.writeUInt32LE(payload.length, 0);
  header.writeUInt32LE(crc32(payload), 4);
  return Buffer.concat([header, payload]);
}

function replay(path: string, fd: number): WalContents {
  const data = readFileSync(path);
  let hardState: HardState = { term: 0, votedFor: null, commitIndex: 0 };
  const entries: LogEntry[] = [];
  let baseIndex = 0;
  let offset = 0;
  let tornBytes = 0;
  const corrupt = (why: string): ShoalError =>
    new ShoalError(
      'CORRUPT_DATA',
      `${path} is corrupt at byte ${offset} (${why}); restore the data dir from a backup or remove it to rejoin as a new node`,
    );
  while (offset < data.length) {
    if (data.length - offset < headerBytes) {
      tornBytes = data.length - offset;
      break;
    }
    const length = data.readUInt32LE(offset);
    const checksum = data.readUInt32LE(offset + 4);
    if (length > walRecordBytesMax) throw corrupt(`record length ${length} is impossible`);
    const end = offset + headerBytes + length;
    if (end > data.length) {
      tornBytes = data.length - offset;
      break;
    }
    const payload = data.subarray(offset + headerBytes, end);
    if (crc32(payload) !== checksum) {
      if (end === data.length) {
        tornBytes = data.length - offset;
        break;
      }
      throw corrupt('checksum mismatch');
    }
    let record: WalRecord;
    try {
      record = JSON.parse(payload.toString('utf8')) as WalRecord;
    } catch {
      throw corrupt('record is not valid JSON');
    }
    switch (record.t) {
      case 'hard':
        hardState = { term: record.term, votedFor: record.votedFor, commitIndex: record.commitIndex };
        break;
      case 'truncate':
        entries.length = Math.max(0, Math.min(entries.length, record.from - baseIndex - 1));
        break;
      case 'reset':
        baseIndex = record.index;
        entries.length = 0;
        break;
      case 'entries':
        for (const entry of record.entries) {
          if (entry.index > baseIndex + entries.length + 1)
            throw corrupt(`entry ${entry.index} leaves a gap`);
          if (entry.index <= baseIndex)
            throw corrupt(`entry ${entry.index} is before the log's start ${baseIndex + 1}`);
          entries.length = entry.index - baseIndex - 1;
          entries.push(entry);
        }
        break;
      default:
        throw corrupt('unknown record type');
    }
    offset = end;
  }
  if (tornBytes > 0) {
    ftruncateSync(fd, offset);
    fsyncSync(fd);
  }
  if (hardState.commitIndex > baseIndex + entries.length) {
    throw corrupt(
      `commit index ${hardState.commitIndex} is beyond the last entry ${baseIndex + entries.length}`,
    );
  }
  return { hardState, baseIndex, entries, tornBytes };
}

function syncDirectory(path: string): void {
  const fd = openSync(join(path, '..'), 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * The snapshot file's first line since format 2: then one line of JSON with the index, term and config,
 * then the state machine's data as it is. Format 1 was the whole snapshot as one JSON object, which
 * escaped the data (itself JSON) a second time: at 500,000 tasks that doubled the time a compaction held
 * the main thread. Format 1 files still load.
 */
const snapshotMagic = 'shoal-snapshot 2\n';

/** The file's parts: the header (u32 LE length and CRC-32 of what follows), the magic and metadata, the data. */
function snapshotParts(snapshot: Snapshot): Buffer[] {
  const { index, term, config } = snapshot;
  const meta = Buffer.from(`${snapshotMagic}${JSON.stringify({ index, term, config })}\n`, 'utf8');
  const data = Buffer.from(snapshot.data, 'utf8');
  const length = meta.length + data.length;
  if (length > 0xffff_ffff)
    throw new ShoalError(
      'TOO_LARGE',
      `a snapshot of ${length} bytes is over the 4 GiB a snapshot file holds`,
    );
  const header = Buffer.alloc(headerBytes);
  header.writeUInt32LE(length, 0);
  header.writeUInt32LE(crc32(data, crc32(meta)), 4);
  return [header, meta, data];
}

function writeAll(fd: number, parts: readonly Buffer[]): void {
  for (const part of parts) {
    for (let offset = 0; offset < part.length;) offset += writeSync(fd, part, offset);
  }
}

/** Saves a snapshot as one checksummed record, atomically (write, fsync, rename). */
export function saveSnapshot(dir: string, snapshot: Snapshot): void {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, snapshotFileName);
  const temporary = `${path}.tmp`;
  const fd = openSync(temporary, 'w', 0o600);
  try {
    writeAll(fd, snapshotParts(snapshot));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
  syncDirectory(path);
}

/**
 * Writes a snapshot beside the current one and fsyncs it off the main thread (encoding and checksum stay
 * on it: ~0.5 s at 500,000 tasks; the write and fsync of 400 MB do not). Resolves with the function that
 * puts it in place (rename, directory fsync), for the caller to run once it knows that no newer snapshot
 * was saved meanwhile.
 */
export async function writeSnapshotAside(dir: string, snapshot: Snapshot): Promise<() => void> {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, snapshotFileName);
  const aside = `${path}.compacting`;
  const parts = snapshotParts(snapshot);
  const file = await open(aside, 'w', 0o600);
  try {
    for (const part of parts) {
      for (let offset = 0; offset < part.length;)
        offset += (await file.write(part, offset, part.length - offset)).bytesWritten;
    }
    await file.sync();
  } finally {
    await file.close();
  }
  return () => {
    renameSync(aside, path);
    syncDirectory(path);
  };
}

/** Loads the snapshot in `dir`, or null if there is none; a damaged one is refused with the file named. */
export function loadSnapshot(dir: string): Snapshot | null {
  const path = join(dir, snapshotFileName);
  if (!existsSync(path)) return null;
  const data = readFileSync(path);
  const length = data.length >= headerBytes ? data.readUInt32LE(0) : -1;
  if (length !== data.length - headerBytes || crc32(data.subarray(headerBytes)) !== data.readUInt32LE(4)) {
    throw new ShoalError(
      'CORRUPT_DATA',
      `${path} is damaged (length or checksum mismatch); restore the data dir from a backup or remove it to rejoin as a new node`,
    );
  }
  const payload = data.subarray(headerBytes);
  const magic = Buffer.from(snapshotMagic, 'utf8');
  if (!payload.subarray(0, magic.length).equals(magic))
    return JSON.parse(payload.toString('utf8')) as Snapshot;
  const metaEnd = payload.indexOf(0x0a, magic.length);
  if (metaEnd < 0)
    throw new ShoalError(
      'CORRUPT_DATA',
      `${path} has no end to its metadata line; restore the data dir from a backup`,
    );
  const meta = JSON.parse(payload.subarray(magic.length, metaEnd).toString('utf8')) as Omit<Snapshot, 'data'>;
  return {
    index: meta.index,
    term: meta.term,
    config: meta.config,
    data: payload.subarray(metaEnd + 1).toString('utf8'),
  };
}
