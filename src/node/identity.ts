/**
 * What a node keeps in its data dir to be itself across restarts: the cluster key, its libp2p key (its
 * peer id), and an incarnation counter bumped on every start.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { ShoalError, invalidArgument } from '../shared/errors.ts';
import { writeFileAtomic } from '../shared/files.ts';

export const clusterKeyFileName = 'cluster.key';
export const nodeKeyFileName = 'node.key';
export const nodeStateFileName = 'node.json';

const clusterKeyPattern = /^[0-9a-f]{64}$/;

export function generateClusterKey(): string {
  return randomBytes(32).toString('hex');
}

export function validateClusterKey(key: string, source: string): string {
  const trimmed = key.trim().toLowerCase();
  if (!clusterKeyPattern.test(trimmed)) {
    throw invalidArgument(
      `${source} must be 64 hex characters (the key printed by the first node), got ${trimmed.length} characters`,
    );
  }
  return trimmed;
}

/** The pre-shared key in the format @libp2p/pnet expects. */
export function pnetKey(clusterKey: string): Uint8Array {
  return new TextEncoder().encode(`/key/swarm/psk/1.0.0/\n/base16/\n${clusterKey}`);
}

/**
 * Settles the cluster key: the one given, the one stored, or a new one for a new cluster. A data dir
 * that already belongs to another cluster is refused.
 */
export function resolveClusterKey(
  dataDir: string,
  given: string | null,
  joining: boolean,
): { key: string; created: boolean } {
  const path = join(dataDir, clusterKeyFileName);
  const stored = existsSync(path) ? validateClusterKey(readFileSync(path, 'utf8'), path) : null;
  if (given !== null) {
    if (stored !== null && stored !== given) {
      throw invalidArgument(
        `${path} holds a different cluster key: this data dir belongs to another cluster; use another --data-dir`,
      );
    }
    if (stored === null) writeFileAtomic(path, given + '\n');
    return { key: given, created: false };
  }
  if (stored !== null) return { key: stored, created: false };
  if (joining)
    throw invalidArgument(
      '--join needs the cluster key: add --key KEY or --key-file FILE (printed by the first node)',
    );
  const key = generateClusterKey();
  writeFileAtomic(path, key + '\n');
  return { key, created: true };
}

export async function loadOrCreateNodeKey(dataDir: string): Promise<PrivateKey> {
  const path = join(dataDir, nodeKeyFileName);
  if (existsSync(path)) {
    try {
      return privateKeyFromProtobuf(readFileSync(path));
    } catch (error) {
      throw new ShoalError(
        'CORRUPT_DATA',
        `${path} is not a valid node key; restore it, or remove the data dir to join as a new node`,
        {
          cause: error,
        },
      );
    }
  }
  const key = await generateKeyPair('Ed25519');
  writeFileAtomic(path, privateKeyToProtobuf(key));
  return key;
}

/** Bumps and returns the node's incarnation: how many times it has started with this data dir. */
export function nextIncarnation(dataDir: string): number {
  const path = join(dataDir, nodeStateFileName);
  let incarnation = 0;
  if (existsSync(path)) {
    try {
      incarnation = (JSON.parse(readFileSync(path, 'utf8')) as { incarnation: number }).incarnation;
    } catch (error) {
      throw new ShoalError('CORRUPT_DATA', `${path} is not valid JSON; fix or remove it`, { cause: error });
    }
  }
  incarnation++;
  writeFileAtomic(path, JSON.stringify({ incarnation }) + '\n');
  return incarnation;
}

/** Makes the data dir, and keeps it 0700: it holds the cluster key, tokens and the API's socket. */
export function ensureDataDir(dataDir: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  chmodSync(dataDir, 0o700);
}
