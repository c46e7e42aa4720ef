/**
 * The cluster's certificate authority as the replicated state keeps it: its certificate, which is public,
 * and its private key sealed with the cluster key, so the Raft log, its snapshots and any copy of them
 * give the key to no one who lacks the cluster key. Every node holds the cluster key (it joined with it),
 * so every node can open the CA key and sign its own API certificate (node/certificates.ts) without asking
 * another. Pure: bytes and strings in, bytes and strings out; the randomness is the IV's.
 *
 * Sealing: AES-256-GCM under a key derived from the cluster key with HKDF-SHA256. The cluster key is 32
 * random bytes, so HKDF needs no salt; its `info` keeps this key apart from any other derived from the same
 * cluster key. The CA certificate is the additional authenticated data: a key sealed for one certificate
 * does not open beside another.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import * as z from 'zod/mini';
import { ShoalError } from '../shared/errors.ts';
import { text, whole } from '../shared/schema.ts';

/** What tells this derived key from any other derived from the cluster key. */
export const caKeyDerivationInfo = 'shoal cluster CA key v1';
/** The sealing's name, stored with each sealed key so a later version can tell how to open it. */
export const caKeySealing = 'hkdf-sha256/aes-256-gcm';
const ivBytes = 12;
const tagBytes = 16;
/** A PEM certificate of an EC P-256 CA is under 1 KiB; a bound far above it. */
const certificatePemLengthMax = 16 * 1024;
/** A sealed PKCS#8 EC key is ~140 bytes (~190 in base64); a bound far above it. */
const sealedKeyBase64LengthMax = 16 * 1024;

const base64 = (lengthMax: number): z.ZodMiniString =>
  text(lengthMax, 1).check(z.regex(/^[A-Za-z0-9+/]+={0,2}$/, 'not base64'));

export const clusterCaSchema = z.strictObject({
  /** The CA's certificate, PEM. */
  certificatePem: text(certificatePemLengthMax, 1).check(
    z.startsWith('-----BEGIN CERTIFICATE-----', 'not a PEM certificate'),
  ),
  /** Its private key (PKCS#8 DER), sealed with the cluster key: see the file's header. */
  sealedKey: z.strictObject({
    sealing: z.literal(caKeySealing),
    iv: base64(64),
    ciphertext: base64(sealedKeyBase64LengthMax),
    tag: base64(64),
  }),
  /** The node that made it, for whoever reads the state. */
  createdBy: text(256, 1),
  createdAtMs: whole(0),
});
export type ClusterCaRecord = z.infer<typeof clusterCaSchema>;

/** The AES-256 key that seals the CA key: HKDF-SHA256 of the cluster key (64 hex characters). */
function sealingKey(clusterKey: string): Buffer {
  return Buffer.from(
    hkdfSync('sha256', Buffer.from(clusterKey, 'hex'), Buffer.alloc(0), caKeyDerivationInfo, 32),
  );
}

/** Seals a CA private key (PKCS#8 DER) for the record of certificatePem. */
export function sealCaKey(
  privateKeyDer: Uint8Array,
  clusterKey: string,
  certificatePem: string,
): ClusterCaRecord['sealedKey'] {
  const iv = randomBytes(ivBytes);
  const cipher = createCipheriv('aes-256-gcm', sealingKey(clusterKey), iv, { authTagLength: tagBytes });
  cipher.setAAD(Buffer.from(certificatePem, 'utf8'));
  const ciphertext = Buffer.concat([cipher.update(privateKeyDer), cipher.final()]);
  return {
    sealing: caKeySealing,
    iv: iv.toString('base64'),
    ciphertext: ciphertext.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
  };
}

/**
 * The CA's private key (PKCS#8 DER). CORRUPT_DATA when it does not open: another cluster key sealed it,
 * or the record was altered; either way no certificate can be signed with it.
 */
export function openCaKey(ca: ClusterCaRecord, clusterKey: string): Buffer {
  const { sealedKey } = ca;
  const iv = Buffer.from(sealedKey.iv, 'base64');
  const tag = Buffer.from(sealedKey.tag, 'base64');
  if (iv.length !== ivBytes || tag.length !== tagBytes)
    throw new ShoalError('CORRUPT_DATA', "the cluster CA's sealed key has an IV or tag of the wrong size");
  try {
    const decipher = createDecipheriv('aes-256-gcm', sealingKey(clusterKey), iv, { authTagLength: tagBytes });
    decipher.setAAD(Buffer.from(ca.certificatePem, 'utf8'));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(Buffer.from(sealedKey.ciphertext, 'base64')), decipher.final()]);
  } catch {
    throw new ShoalError(
      'CORRUPT_DATA',
      "the cluster CA's key does not open with this node's cluster key (another cluster's key, or an altered record)",
    );
  }
}
