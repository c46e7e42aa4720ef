/**
 * The write-ahead log: Raft's entries and hard state, appended as checksummed records and fsynced before
 * the node acts on them. Record: u32 LE payload length, u32 LE CRC-32 of the payload, JSON payload.
 *
 * On open, a torn tail (a last record cut short or with a bad checksum, as a crash mid-write leaves) is
 * truncated away; a bad record followed by more data is corruption and is refused, naming file and offset.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, ftruncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { ShoalError } from '../shared/errors.ts';
import type { HardState, LogEntry } from './types.ts';

export const walFileName = 'raft.wal';
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
  | { readonly t: 'truncate'; readonly from: number };

export interface WalContents {
  readonly hardState: HardState;
  readonly entries: LogEntry[];
  /** Bytes cut from a torn tail on open; 0 when the file ended cleanly. */
  readonly tornBytes: number;
}

export class Wal {
  readonly path: string;
  private fd: number;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.fd = fd;
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
    return { wal: new Wal(path, fd), contents };
  }

  /** Appends what one Raft Ready asks to persist, as one write, then fsyncs. */
  persist(hardState: HardState | null, truncateFrom: number | null, entries: readonly LogEntry[]): void {
    const records: WalRecord[] = [];
    if (truncateFrom !== null) records.push({ t: 'truncate', from: truncateFrom });
    if (entries.length > 0) records.push({ t: 'entries', entries });
    if (hardState) records.push({ t: 'hard', ...hardState });
    if (records.length === 0) return;
    const buffer = Buffer.concat(records.map(encodeRecord));
    let written = 0;
    while (written < buffer.length) written += writeSync(this.fd, buffer, written);
    fsyncSync(this.fd);
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
        entries.length = Math.max(0, Math.min(entries.length, record.from - 1));
        break;
      case 'entries':
        for (const entry of record.entries) {
          if (entry.index > entries.length + 1) throw corrupt(`entry ${entry.index} leaves a gap`);
          entries.length = entry.index - 1;
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
  if (hardState.commitIndex > entries.length) {
    throw corrupt(`commit index ${hardState.commitIndex} is beyond the last entry ${entries.length}`);
  }
  return { hardState, entries, tornBytes };
}
