/**
 * Ed25519 signatures for membership records and claims, with the node's libp2p key. A node's public
 * key is embedded in its peer id, so any node can check any signature with no key exchange. Uses
 * node:crypto directly because the state machine needs synchronous calls (~30 µs to sign, ~70 µs to
 * check); public keys are cached per id.
 */
import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { ShoalError } from '../shared/errors.ts';
import type { MembershipCrypto } from './records.ts';

/** Public keys kept in the cache; beyond it the cache is cleared (ids are cheap to re-derive). */
export const publicKeyCacheMax = 20_000;

export function ed25519MembershipCrypto(privateKey: PrivateKey): MembershipCrypto {
  if (privateKey.type !== 'Ed25519') {
    throw new ShoalError('INVALID_ARGUMENT', `membership needs an Ed25519 node key, not ${privateKey.type}`);
  }
  // libp2p keeps Ed25519 private keys as seed (32 bytes) followed by the public key (32 bytes).
  const raw = privateKey.raw;
  const key = createPrivateKey({
    format: 'jwk',
    key: {
      kty: 'OKP',
      crv: 'Ed25519',
      d: Buffer.from(raw.subarray(0, 32)).toString('base64url'),
      x: Buffer.from(privateKey.publicKey.raw).toString('base64url'),
    },
  });
  const publicKeys = new Map<string, KeyObject | null>();
  const publicKeyOf = (id: string): KeyObject | null => {
    let cached = publicKeys.get(id);
    if (cached !== undefined) return cached;
    cached = null;
    try {
      const peerId = peerIdFromString(id);
      if (peerId.type === 'Ed25519') {
        cached = createPublicKey({
          format: 'jwk',
          key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(peerId.publicKey.raw).toString('base64url') },
        });
      }
    } catch {
      // Not a peer id: nothing it signs can be believed.
    }
    if (publicKeys.size >= publicKeyCacheMax) publicKeys.clear();
    publicKeys.set(id, cached);
    return cached;
  };
  return {
    sign: (bytes) => sign(null, bytes, key),
    verify: (signerId, bytes, signature) => {
      const publicKey = publicKeyOf(signerId);
      if (publicKey === null) return false;
      try {
        return verify(null, bytes, publicKey, signature);
      } catch {
        return false;
      }
    },
  };
}
