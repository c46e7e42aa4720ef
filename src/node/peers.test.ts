import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { peersFileName, peersKeptMax, readPeers, writePeers } from './peers.ts';

describe('the members a node keeps in its data dir', () => {
  it('writes what changed, reads it back, and keeps at most peersKeptMax without repeats', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shoal-peers-'));
    expect(readPeers(dir)).toEqual([]);
    const a = '/ip4/10.0.0.1/tcp/4700/p2p/a';
    const b = '/ip4/10.0.0.2/tcp/4700/p2p/b';
    const kept = writePeers(dir, [a, b, a], []);
    expect(kept).toEqual([a, b]);
    expect(readPeers(dir)).toEqual([a, b]);
    // Nobody alive (a lone node after a partition) keeps the last seeds rather than none.
    expect(writePeers(dir, [], kept)).toEqual([a, b]);
    expect(readPeers(dir)).toEqual([a, b]);
    const many = Array.from({ length: 40 }, (_, i) => `/ip4/10.0.1.${i}/tcp/4700/p2p/n${i}`);
    expect(writePeers(dir, many, kept)).toHaveLength(peersKeptMax);
    expect(readPeers(dir)).toHaveLength(peersKeptMax);
  });

  it('reads a damaged or foreign file as no seeds', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shoal-peers-'));
    writeFileSync(join(dir, peersFileName), '{"not": "a list"');
    expect(readPeers(dir)).toEqual([]);
    writeFileSync(join(dir, peersFileName), '[1, "/ip4/10.0.0.1/tcp/4700/p2p/a", null]');
    expect(readPeers(dir)).toEqual(['/ip4/10.0.0.1/tcp/4700/p2p/a']);
  });
});
