/**
 * A WAL on a disk that fills (a size-capped tmpfs): a write that does not fit fails with a clear error,
 * leaves no torn record behind, and writing works again once space returns. Needs root (mount).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Wal } from '../../src/election/index.ts';
import type { LogEntry } from '../../src/election/index.ts';

const isRoot = process.getuid?.() === 0;
const mountPoint = mkdtempSync(join(tmpdir(), 'shoal-full-'));

describe.skipIf(!isRoot)('a WAL on a full disk (needs root to mount a tmpfs)', () => {
  beforeAll(() => {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mountPoint]);
  });
  afterAll(() => {
    execFileSync('umount', ['-l', mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  });

  it('refuses the write, keeps the log whole, and recovers when space returns', () => {
    const dir = join(mountPoint, 'raft');
    const { wal } = Wal.open(dir);
    const entry = (index: number): LogEntry => ({ index, term: 1, kind: 'command', data: 'x'.repeat(2000) });
    let index = 1;
    let failure: unknown = null;
    for (; index < 1000; index++) {
      try {
        wal.persist({ term: 1, votedFor: null, commitIndex: index }, null, [entry(index)]);
      } catch (error) {
        failure = error;
        break;
      }
    }
    expect(String(failure)).toMatch(/cannot write .*raft\.wal: .*ENOSPC.*free space in the data dir/);
    const written = index - 1;
    // Space returns (the tmpfs grows): the same write now succeeds where the log left off.
    execFileSync('mount', ['-o', 'remount,size=2m', mountPoint]);
    wal.persist({ term: 1, votedFor: null, commitIndex: index }, null, [entry(index)]);
    wal.close();
    const { contents } = Wal.open(dir);
    expect(written).toBeGreaterThan(10);
    expect(contents.tornBytes).toBe(0);
    expect(contents.entries.map((e) => e.index)).toEqual(Array.from({ length: index }, (_, i) => i + 1));
    expect(contents.hardState.commitIndex).toBe(index);
  });
});
