/**
 * Membership's wire messages. Probe traffic (ping, ack, ping-req, nack, gossip) is datagram-like: one
 * JSON message per frame on a long-lived stream per peer, lost if the stream is congested or broken,
 * and each carries piggybacked updates. Push-pull is a request/response on its own protocol. Every
 * message is size-bounded and schema-checked by the shell before the state machine sees it.
 */
import * as z from 'zod/mini';
import { text, whole } from '../shared/schema.ts';
import { signedSchema, type Signed } from './records.ts';

export const swimProtocol = '/shoal/swim/1.0.0';
export const swimSyncProtocol = '/shoal/swim/sync/1.0.0';

/** The largest probe/gossip datagram, in bytes (updates are packed well below it). */
export const swimMessageBytesMax = 64 * 1024;
/** The largest push-pull message, in bytes: about 10,000 members' records. */
export const syncMessageBytesMax = 16 * 1024 * 1024;
/** Updates one datagram may carry (the sender packs far fewer: updatesPerMessageMax). */
export const updatesPerDatagramMax = 256;
/** Entries in one push-pull message (a digest or records). */
export const syncEntriesMax = 10_000;

/** A gossiped update: a node's signed record (alive, or left when `leaving`), or a signed claim. */
export const updateSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('record'), signed: signedSchema }),
  z.strictObject({ type: z.literal('claim'), signed: signedSchema }),
]);

export type Update = z.infer<typeof updateSchema>;

const updates = z.array(updateSchema).check(z.maxLength(updatesPerDatagramMax));
const seq = whole(0);
const id = text(128, 1);

/**
 * On frames exchanged with a peer that hosts members (a record's `via`): the hosted member the frame is
 * for, or from. Absent between real nodes.
 */
const member = z.optional(id);

export const swimMessageSchema = z.discriminatedUnion('type', [
  /** Are you there? `target` is who the sender means to reach (guards against a reused address). */
  z.strictObject({ type: z.literal('ping'), seq, target: id, updates, member }),
  /** Yes (or, relayed by a helper: the target answered me). */
  z.strictObject({ type: z.literal('ack'), seq, updates, member }),
  /** Please probe `target` for me and relay its ack, or nack if it does not answer. */
  z.strictObject({ type: z.literal('pingReq'), seq, target: id, updates, member }),
  /** I asked `target` for you and heard nothing: so the problem is not your own network. */
  z.strictObject({ type: z.literal('nack'), seq, updates, member }),
  /** Updates only. */
  z.strictObject({ type: z.literal('gossip'), updates, member }),
]);

export type SwimMessage = z.infer<typeof swimMessageSchema>;

/** What one member is in a node's view: enough for a peer to tell whether it knows something newer. */
export const digestEntrySchema = z.tuple([
  id,
  /** Record version. */
  whole(0),
  whole(0),
  /** State rank: 0 alive, 1 suspect, 2 dead, 3 left. */
  whole(0, 3),
  /** The version the state refers to. */
  whole(0),
  whole(0),
]);

export type DigestEntry = z.infer<typeof digestEntrySchema>;

export const syncEntrySchema = z.strictObject({ record: signedSchema, claim: z.nullable(signedSchema) });

export interface SyncEntry {
  readonly record: Signed;
  /** The latest suspect/dead claim the sender holds about this member, if it believes one. */
  readonly claim: Signed | null;
}

/**
 * Push-pull. The caller sends its digest (and, on the last leg, the entries the callee lacks); the
 * callee merges the entries and answers with what is newer on its side plus its own digest, so the
 * caller can send back what is newer on the caller's side. `digest: null` asks for no answer.
 */
export const syncRequestSchema = z.strictObject({
  digest: z.nullable(z.array(digestEntrySchema).check(z.maxLength(syncEntriesMax))),
  entries: z.array(syncEntrySchema).check(z.maxLength(syncEntriesMax)),
});

export type SyncRequest = z.infer<typeof syncRequestSchema>;

export const syncReplySchema = z.strictObject({
  digest: z.nullable(z.array(digestEntrySchema).check(z.maxLength(syncEntriesMax))),
  entries: z.array(syncEntrySchema).check(z.maxLength(syncEntriesMax)),
});

export type SyncReply = z.infer<typeof syncReplySchema>;
