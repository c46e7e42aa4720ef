import { appendFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { crc32 } from 'node:zlib';
import { Wal, loadSnapshot, saveSnapshot, snapshotFileName, walFileName, writeSnapshotAside } from './wal.ts';
import type { LogEntry } from './types.ts';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-wal-'));
  dirs.push(dir);
  return dir;
}
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const entry = (index: number, term: number, data = `d${index}`): LogEntry => ({
  index,
  term,
  kind: 'command',
  data,
});

describe('Wal', () => {
  it('round-trips entries, truncations and hard state', () => {
    const dir = tempDir();
    const { wal } = Wal.open(dir);
    wal.persist({ term: 1, votedFor: 'a', commitIndex: 0 }, null, [entry(1, 1), entry(2, 1), entry(3, 1)]);
    wal.persist({ term: 2, votedFor: null, commitIndex: 2 }, 3, [entry(3, 2, 'new')]);
    wal.close();
    const { contents } = Wal.open(dir);
    expect(contents.hardState).toEqual({ term: 2, votedFor: null, commitIndex: 2 });
    expect(contents.entries.map((e) => [e.index, e.term, e.data])).toEqual([
      [1, 1, 'd1'],
      [2, 1, 'd2'],
      [3, 2, 'new'],
    ]);
    expect(contents.tornBytes).toBe(0);
  });

  it('truncates a torn tail left by a crash mid-write and keeps everything before it', () => {
    const dir = tempDir();
    const { wal } = Wal.open(dir);
    wal.persist(null, null, [entry(1, 1)]);
    wal.persist(null, null, [entry(2, 1)]);
    wal.close();
    const path = join(dir, walFileName);
    const size = readFileSync(path).length;
    truncateSync(path, size - 5);
    const first = Wal.open(dir);
    expect(first.contents.entries.map((e) => e.index)).toEqual([1]);
    expect(first.contents.tornBytes).toBeGreaterThan(0);
    // The torn bytes are gone from disk, so appends continue from a clean end.
    first.wal.persist(null, null, [entry(2, 1, 'again')]);
    first.wal.close();
    expect(Wal.open(dir).contents.entries.map((e) => e.data)).toEqual(['d1', 'again']);
  });

  it('treats a bad checksum on the last record as a torn tail', () => {
    const dir = tempDir();
    const { wal } = Wal.open(dir);
    wal.persist(null, null, [entry(1, 1)]);
    wal.persist(null, null, [entry(2, 1)]);
    wal.close();
    const path = join(dir, walFileName);
    const data = readFileSync(path);
    data.writeUInt8(data.readUInt8(data.length - 2) ^ 0xff, data.length - 2);
    writeFileSync(path, data);
    expect(Wal.open(dir).contents.entries.map((e) => e.index)).toEqual([1]);
  });

  it('refuses corruption in the middle, naming the file and offset', () => {
    const dir = tempDir();
    const { wal } = Wal.open(dir);
    wal.persist(null, null, [entry(1, 1)]);
    wal.close();
    const path = join(dir, walFileName);
    const data = readFileSync(path);
    data.writeUInt8(data.readUInt8(10) ^ 0xff, 10);
    writeFileSync(path, data);
    appendFileSync(path, readFileSync(path));
    expect(() => Wal.open(dir)).toThrow(
      new RegExp(`${walFileName} is corrupt at byte 0 \\(checksum mismatch\\)`),
    );
  });

  it('rewrites itself after a snapshot: only later entries remain, and appends continue', () => {
    const dir = tempDir();
    const { wal } = Wal.open(dir);
    wal.persist({ term: 1, votedFor: null, commitIndex: 3 }, null, [
      entry(1, 1),
      entry(2, 1),
      entry(3, 1),
      entry(4, 1),
    ]);
    const before = wal.sizeBytes;
    wal.rewrite({ term: 1, votedFor: null, commitIndex: 3 }, 3, 1, [entry(4, 1)]);
    expect(wal.sizeBytes).toBeLessThan(before);
    wal.persist(null, null, [entry(5, 1)]);
    wal.close();
    const { contents } = Wal.open(dir);
    expect(contents.baseIndex).toBe(3);
    expect(contents.entries.map((e) => e.index)).toEqual([4, 5]);
  });

  it('saves and loads a snapshot, and refuses a damaged one', () => {
    const dir = tempDir();
    expect(loadSnapshot(dir)).toBeNull();
    const snapshot = { index: 7, term: 2, config: { voters: ['a'], learners: [] }, data: '{"x":1}' };
    saveSnapshot(dir, snapshot);
    expect(loadSnapshot(dir)).toEqual(snapshot);
    const path = join(dir, snapshotFileName);
    const data = readFileSync(path);
    data.writeUInt8(data.readUInt8(20) ^ 0xff, 20);
    writeFileSync(path, data);
    expect(() => loadSnapshot(dir)).toThrow(/snapshot.bin is damaged/);
  });

  it('keeps the data as it is after a metadata line (format 2), newlines and any character included', () => {
    const dir = tempDir();
    const data = '{"name":"a\\nb","note":"ünïcode ✓ \u{1f41f}"}\n{"second":"line"}';
    const snapshot = { index: 9, term: 3, config: { voters: ['a', 'b'], learners: ['c'] }, data };
    saveSnapshot(dir, snapshot);
    const file = readFileSync(join(dir, snapshotFileName));
    // The data is not escaped a second time: its bytes end the file as they are.
    expect(file.subarray(file.length - Buffer.byteLength(data)).toString('utf8')).toBe(data);
    expect(file.subarray(8, 25).toString('utf8')).toBe('shoal-snapshot 2\n');
    expect(loadSnapshot(dir)).toEqual(snapshot);
  });

  it('loads a snapshot written by an older shoal (format 1: one JSON object)', () => {
    const dir = tempDir();
    const snapshot = { index: 4, term: 1, config: { voters: ['a'], learners: [] }, data: '{"x":"y"}' };
    const payload = Buffer.from(JSON.stringify(snapshot), 'utf8');
    const header = Buffer.alloc(8);
    header.writeUInt32LE(payload.length, 0);
    header.writeUInt32LE(crc32(payload), 4);
    writeFileSync(join(dir, snapshotFileName), Buffer.concat([header, payload]));
    expect(loadSnapshot(dir)).toEqual(snapshot);
  });

  it('writes a snapshot aside, and puts it in place only when told', async () => {
    const dir = tempDir();
    const older = { index: 3, term: 1, config: { voters: ['a'], learners: [] }, data: '{"n":3}' };
    saveSnapshot(dir, older);
    const newer = { ...older, index: 8, data: '{"n":8}' };
    const putInPlace = await writeSnapshotAside(dir, newer);
    expect(loadSnapshot(dir)).toEqual(older);
    putInPlace();
    expect(loadSnapshot(dir)).toEqual(newer);
  });
});
