import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { isShoalError } from '../shared/errors.ts';
import { clusterCaSchema, openCaKey, sealCaKey, type ClusterCaRecord } from './ca.ts';
import { decodeCommand, encodeCommand } from './command.ts';
import { ClusterState } from './state.ts';

const clusterKey = 'a1'.repeat(32);
const otherClusterKey = 'b2'.repeat(32);
const certificatePem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
const privateKeyDer = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({
  format: 'der',
  type: 'pkcs8',
});

function record(key = clusterKey, pem = certificatePem): ClusterCaRecord {
  return {
    certificatePem: pem,
    sealedKey: sealCaKey(privateKeyDer, key, pem),
    createdBy: 'n1',
    createdAtMs: 1,
  };
}

function openError(ca: ClusterCaRecord, key: string): unknown {
  try {
    openCaKey(ca, key);
  } catch (error) {
    return error;
  }
  return null;
}

describe('the cluster CA key, sealed with the cluster key', () => {
  it('opens with the cluster key it was sealed with, and the sealed form is no copy of the key', () => {
    const ca = record();
    expect(clusterCaSchema.safeParse(ca).success).toBe(true);
    expect(openCaKey(ca, clusterKey)).toEqual(privateKeyDer);
    expect(Buffer.from(ca.sealedKey.ciphertext, 'base64').includes(privateKeyDer.subarray(-32))).toBe(false);
    // A fresh IV each time: sealing twice gives two different texts.
    expect(record().sealedKey.ciphertext).not.toBe(ca.sealedKey.ciphertext);
  });

  it("does not open with another cluster's key, nor beside another certificate, nor altered", () => {
    const ca = record();
    expect(isShoalError(openError(ca, otherClusterKey), 'CORRUPT_DATA')).toBe(true);
    const moved = { ...ca, certificatePem: certificatePem.replace('MIIB', 'MIIC') };
    expect(isShoalError(openError(moved, clusterKey), 'CORRUPT_DATA')).toBe(true);
    const flipped = Buffer.from(ca.sealedKey.ciphertext, 'base64');
    flipped[0] = (flipped[0] ?? 0) ^ 1;
    const altered = { ...ca, sealedKey: { ...ca.sealedKey, ciphertext: flipped.toString('base64') } };
    expect(isShoalError(openError(altered, clusterKey), 'CORRUPT_DATA')).toBe(true);
    const shortIv = { ...ca, sealedKey: { ...ca.sealedKey, iv: 'AAAA' } };
    expect(String(openError(shortIv, clusterKey))).toMatch(/wrong size/);
  });
});

describe('the cluster CA in the replicated state', () => {
  it('travels in the log as a validated command', () => {
    const command = { type: 'setClusterCa', ca: record(), atMs: 2 } as const;
    expect(decodeCommand(1, encodeCommand(command))).toEqual(command);
    const unsealed = { ...command, ca: { ...command.ca, privateKeyPem: 'oops' } };
    expect(() => decodeCommand(2, JSON.stringify(unsealed))).toThrow(/privateKeyPem/);
  });

  it('keeps the first CA committed and refuses a second, which its maker then replaces by the first', () => {
    const state = new ClusterState();
    const first = record();
    expect(state.apply(1, { type: 'setClusterCa', ca: first, atMs: 1 })).toEqual({ ok: true });
    expect(state.apply(2, { type: 'setClusterCa', ca: record(), atMs: 2 })).toMatchObject({
      ok: false,
      code: 'CONFLICT',
    });
    expect(state.clusterCa).toEqual(first);
  });

  it('keeps the CA across a snapshot, and reads a snapshot from before CAs as none', () => {
    const state = new ClusterState();
    const ca = record();
    state.apply(1, { type: 'setClusterCa', ca, atMs: 1 });
    const restored = new ClusterState();
    restored.restore(state.toSnapshot());
    expect(restored.clusterCa).toEqual(ca);
    const old = JSON.parse(state.toSnapshot()) as Record<string, unknown>;
    delete old['clusterCa'];
    restored.restore(JSON.stringify(old));
    expect(restored.clusterCa).toBeNull();
  });
});
