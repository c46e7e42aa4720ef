/**
 * What membership gossips: node records (signed by the node they describe) and claims that a node is
 * suspect or dead (signed by the node that makes them). Both travel as the exact JSON text that was
 * signed, so a relay can neither alter nor re-serialise them, and a receiver checks schema, size and
 * signature before it believes anything.
 *
 * Versions. A record's version is the pair (incarnation, revision), compared in that order:
 * - `incarnation` is the node's boot count, persisted in its data dir (identity.ts nextIncarnation), so
 *   a restarted node's first record outranks anything from its previous life;
 * - `revision` counts changes within one boot: every refutation of a suspicion and every change of what
 *   the node advertises bumps it.
 * Together they are SWIM's "incarnation number". Older versions never overwrite newer ones.
 */
import * as z from 'zod/mini';
import { deviceKindsMax } from '../shared/index.ts';
import { taskDrivers } from '../shared/drivers.ts';
import { text, whole } from '../shared/schema.ts';

/** The largest signed record or claim body, in bytes of JSON. Bounds every gossiped item. */
export const recordBytesMax = 4096;
/** Labels one node may advertise. */
export const labelsMax = 64;
/** Addresses one node may advertise. */
export const addressesMax = 16;

export const nodeRecordSchema = z.strictObject({
  id: text(128, 1),
  name: text(128, 1),
  /** libp2p multiaddrs the node listens on, with its /p2p/ id. */
  addresses: z.array(text(256)).check(z.maxLength(addressesMax)),
  /** host:port of the cluster listener, for display and join commands. */
  address: text(256),
  cpuMillis: whole(0),
  memoryBytes: whole(0),
  /** Disk offered to tasks; absent from nodes that advertise none. */
  diskBytes: z.optional(whole(0)),
  /** Device counts by kind offered to tasks (e.g. gpu: 2). */
  devices: z.optional(
    z
      .record(text(64, 1), whole(0, 1_000_000))
      .check(
        z.refine(
          (devices) => Object.keys(devices).length <= deviceKindsMax,
          `at most ${deviceKindsMax} device kinds`,
        ),
      ),
  ),
  labels: z
    .record(text(128), text(256))
    .check(z.refine((labels) => Object.keys(labels).length <= labelsMax, `at most ${labelsMax} labels`)),
  drivers: z.array(z.enum(taskDrivers)).check(z.maxLength(taskDrivers.length)),
  /** The range the node gives tasks' dynamic ports from; absent: the cluster's default. */
  dynamicPorts: z.optional(z.strictObject({ min: whole(1, 65_535), max: whole(1, 65_535) })),
  version: text(64),
  /** The node's boot count (persisted): a restart always outranks the previous life. */
  incarnation: whole(0),
  /** Changes within one boot: refutations of suspicion and updates of what the node advertises. */
  revision: whole(0),
  /** Set once, by a graceful leave. */
  leaving: z.boolean(),
  /**
   * A node hosted by another libp2p peer (the fleet simulator's simulated nodes): its membership frames
   * and lease renewals travel over that peer's connections, which may speak for it because this record,
   * signed by the node's own key, names it. Absent for every real node.
   */
  via: z.optional(text(128, 1)),
});

export type NodeRecord = z.infer<typeof nodeRecordSchema>;

export const claimSchema = z.strictObject({
  kind: z.enum(['suspect', 'dead']),
  /** The node the claim is about. */
  subject: text(128, 1),
  /** The subject's version the claim is about; a higher version refutes it. */
  incarnation: whole(0),
  revision: whole(0),
  /** The node that makes the claim, and signs it. */
  from: text(128, 1),
});

export type Claim = z.infer<typeof claimSchema>;

/** The exact signed JSON text and its Ed25519 signature (base64). */
export const signedSchema = z.strictObject({
  body: text(recordBytesMax),
  signature: text(128),
});

export type Signed = z.infer<typeof signedSchema>;

export interface SignedRecord {
  readonly signed: Signed;
  readonly record: NodeRecord;
}

export interface SignedClaim {
  readonly signed: Signed;
  readonly claim: Claim;
}

/**
 * Signing and checking signatures. The shell implements it with the node's libp2p key (Ed25519); the
 * public key of a node is embedded in its id, so checking needs no key exchange. Must be synchronous
 * and deterministic: the state machine calls it while handling a message.
 */
export interface MembershipCrypto {
  sign(bytes: Uint8Array): Uint8Array;
  verify(signerId: string, bytes: Uint8Array, signature: Uint8Array): boolean;
}

export interface Version {
  readonly incarnation: number;
  readonly revision: number;
}

/** Negative if a is older than b, zero if equal, positive if newer. */
export function compareVersions(a: Version, b: Version): number {
  return a.incarnation - b.incarnation || a.revision - b.revision;
}

export function versionOf(value: Version): Version {
  return { incarnation: value.incarnation, revision: value.revision };
}

export function formatVersion(version: Version): string {
  return `${version.incarnation}.${version.revision}`;
}

const encoder = new TextEncoder();

export function signRecord(record: NodeRecord, crypto: MembershipCrypto): SignedRecord {
  const canonical = canonicalRecord(record);
  return { signed: signBody(JSON.stringify(canonical), crypto), record: canonical };
}

/** The record with its keys in schema order: `id` first, so a receiver can find a duplicate cheaply. */
export function canonicalRecord(record: NodeRecord): NodeRecord {
  return {
    id: record.id,
    name: record.name,
    addresses: record.addresses,
    address: record.address,
    cpuMillis: record.cpuMillis,
    memoryBytes: record.memoryBytes,
    ...(record.diskBytes === undefined ? {} : { diskBytes: record.diskBytes }),
    ...(record.devices === undefined ? {} : { devices: record.devices }),
    labels: record.labels,
    drivers: record.drivers,
    ...(record.dynamicPorts === undefined ? {} : { dynamicPorts: record.dynamicPorts }),
    version: record.version,
    incarnation: record.incarnation,
    revision: record.revision,
    leaving: record.leaving,
    ...(record.via === undefined ? {} : { via: record.via }),
  };
}

export function signClaim(claim: Claim, crypto: MembershipCrypto): SignedClaim {
  return { signed: signBody(JSON.stringify(claim), crypto), claim };
}

function signBody(body: string, crypto: MembershipCrypto): Signed {
  const bytes = encoder.encode(body);
  if (bytes.length > recordBytesMax) {
    throw new RangeError(`a signed body of ${bytes.length} bytes exceeds ${recordBytesMax} bytes`);
  }
  return { body, signature: Buffer.from(crypto.sign(bytes)).toString('base64') };
}

/** The record in a signed body, if it parses (the signature is checked apart: see isSignedBy). */
export function parseRecord(signed: Signed): NodeRecord | null {
  return parseBody(signed, nodeRecordSchema);
}

/** The claim in a signed body, if it parses (the signature is checked apart: see isSignedBy). */
export function parseClaim(signed: Signed): Claim | null {
  return parseBody(signed, claimSchema);
}

/**
 * Whether `signerId`'s key made the signature. Apart from parsing so a receiver checks (~0.1 ms) only
 * what would change its state, not every echo of what it already knows.
 */
export function isSignedBy(signed: Signed, signerId: string, crypto: MembershipCrypto): boolean {
  const signature = Buffer.from(signed.signature, 'base64');
  if (signature.length === 0) return false;
  return crypto.verify(signerId, encoder.encode(signed.body), signature);
}

function parseBody<T>(signed: Signed, schema: z.ZodMiniType<T>): T | null {
  let value: unknown;
  try {
    value = JSON.parse(signed.body);
  } catch {
    return null;
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : null;
}
