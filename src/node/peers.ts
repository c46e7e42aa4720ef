/**
 * The members a node last knew, kept in its data dir (as Serf keeps a snapshot), so that a member that
 * restarts without --join finds the cluster again by itself. Without it a restarted node knows no one:
 * it could answer peers that dial it, but dial no one (libp2p's address book lives in memory), and once
 * its inbound connections closed it stayed alone. Only addresses are kept, not trust: joining through
 * them takes the same handshake with the cluster key as any join.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../shared/files.ts';

export const peersFileName = 'peers.json';
/** Addresses kept: enough seeds to find a cluster that lost many nodes at once. */
export const peersKeptMax = 32;

/** The members' addresses (multiaddrs), from a node's data dir; none when the file is missing or not ours. */
export function readPeers(dataDir: string): string[] {
  const path = join(dataDir, peersFileName);
  if (!existsSync(path)) return [];
  try {
    const parsed: unknown = JSON.parse(readFileSync(path, 'utf8'));
    if (!Array.isArray(parsed)) return [];
    return parsed.filter((entry): entry is string => typeof entry === 'string').slice(0, peersKeptMax);
  } catch {
    // A damaged file costs only the rejoin's seeds: the node still runs and others may dial it.
    return [];
  }
}

/** Keeps these addresses (at most peersKeptMax, in the order given) when they differ from what is kept. */
export function writePeers(dataDir: string, addresses: readonly string[], kept: readonly string[]): string[] {
  const next = [...new Set(addresses)].slice(0, peersKeptMax);
  if (next.length === 0 || next.join(' ') === kept.join(' ')) return [...kept];
  // Not fsynced: a lost update costs a seed or two, not correctness.
  writeFileAtomic(join(dataDir, peersFileName), `${JSON.stringify(next)}\n`, { durable: false });
  return next;
}
