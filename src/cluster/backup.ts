/**
 * Backups: `shoal snapshot save` writes the replicated state as one file, `shoal snapshot restore` puts it
 * into a new cluster. This module is the file format and its checks, pure: the file carries the state as
 * the Raft snapshot holds it (a JSON text), that text's SHA-256, and what a human wants to know before
 * restoring (when, from which index, how many tasks). Checked on the client before it sends anything and
 * again on the node, so a truncated, damaged or foreign file is refused with the reason, and nothing
 * reaches the log that the state could not apply.
 */
import { createHash } from 'node:crypto';
import * as z from 'zod/mini';
import { ShoalError } from '../shared/errors.ts';
import { text, whole } from '../shared/schema.ts';
import { wireMessageBytesMax } from '../shared/wire.ts';
import { clusterCaSchema } from './ca.ts';
import { jobRecordSchema } from './jobs.ts';
import { taskIdPattern } from './submission.ts';
import { describeIssues, namespacePolicySchema, taskSpecSchema, taskStates } from './task.ts';
import { tokenRecordSchema } from './tokens.ts';

export const backupFormat = 'shoal-snapshot';
/** The file layout this build writes and reads; a newer one is refused rather than half-read. */
export const backupVersion = 1;
/**
 * The most state a restore accepts, in bytes of its JSON text. The state is restored through one log entry
 * and reaches a member that joins later in one message (InstallSnapshot), whose JSON escaping adds to it;
 * this leaves that message room under the wire's limit.
 */
export const backupStateBytesMax = Math.floor(wireMessageBytesMax * 0.75);
/** A file's bytes on the way in: the state, escaped once more inside the file's JSON. */
export const backupFileBytesMax = 2 * wireMessageBytesMax;

const taskId = z.string().check(z.regex(taskIdPattern));
const timeMs = whole(0);

/** A task as the state holds it (cluster/task.ts `Task`). */
const taskRecordSchema = z.strictObject({
  id: taskId,
  spec: taskSpecSchema,
  submitIndex: whole(0),
  submittedAtMs: timeMs,
  desired: z.enum(['run', 'kill', 'move', 'preempt']),
  nominatedNodeId: z.exactOptional(text(128, 1)),
  preemptedBy: z.exactOptional(text(64 * 1024)),
  state: z.enum(taskStates),
  nodeId: z.nullable(text(128, 1)),
  attempt: whole(0),
  notBeforeMs: z.nullable(timeMs),
  exitCode: z.nullable(z.int()),
  reason: z.nullable(text(64 * 1024)),
  updatedAtMs: timeMs,
  // Snapshots from before task events have none.
  events: z.exactOptional(z.array(z.strictObject({ atMs: timeMs, message: text(64 * 1024) }))),
  hostPorts: z.exactOptional(z.record(text(64, 1), whole(1, 65_535))),
  deviceSlots: z.exactOptional(z.record(text(64, 1), z.array(whole(0, 1024)).check(z.maxLength(1024)))),
  runningSinceMs: z.exactOptional(timeMs),
  health: z.exactOptional(
    z.strictObject({
      status: z.enum(['healthy', 'unhealthy']),
      sinceMs: timeMs,
      message: text(64 * 1024),
    }),
  ),
  instance: z.exactOptional(
    z.strictObject({
      job: text(64, 1),
      group: text(64, 1),
      task: text(64, 1),
      slot: whole(0),
      version: whole(1),
      pinnedNodeId: z.exactOptional(text(128, 1)),
    }),
  ),
});

/**
 * What a restore takes from a saved state: tasks, jobs, namespaces, tokens and the CA. Nodes are the old
 * cluster's machines, read but not restored (the restoring cluster has its own); other fields are ignored.
 */
export const backupStateSchema = z.object({
  appliedIndex: whole(0),
  tasks: z.array(taskRecordSchema),
  terminalOrder: z.array(taskId),
  namespaces: z.exactOptional(z.array(namespacePolicySchema)),
  tokens: z.exactOptional(z.array(tokenRecordSchema)),
  clusterCa: z.exactOptional(z.nullable(clusterCaSchema)),
  jobs: z.exactOptional(z.array(jobRecordSchema)),
});
export type BackupState = z.infer<typeof backupStateSchema>;

/** The file `shoal snapshot save` writes and `GET /v1/snapshot` answers with. */
export const backupFileSchema = z.strictObject({
  format: z.literal(backupFormat),
  version: whole(1),
  shoalVersion: text(64),
  createdAt: text(64),
  /** The Raft index the state is at. */
  index: whole(0),
  /** How many tasks the state holds, for a human choosing between files. */
  tasks: whole(0),
  /** Hex SHA-256 of `state`'s UTF-8 bytes. */
  sha256: z.string().check(z.regex(/^[0-9a-f]{64}$/)),
  /** The state as the Raft snapshot holds it: a JSON text, checksummed as it is. */
  state: z.string(),
});
export type BackupFile = z.infer<typeof backupFileSchema>;

/** The backup of a state: `stateJson` as ClusterState.toSnapshot() gives it. */
export function makeBackupFile(
  stateJson: string,
  meta: {
    readonly index: number;
    readonly tasks: number;
    readonly atMs: number;
    readonly shoalVersion: string;
  },
): BackupFile {
  return {
    format: backupFormat,
    version: backupVersion,
    shoalVersion: meta.shoalVersion,
    createdAt: new Date(meta.atMs).toISOString(),
    index: meta.index,
    tasks: meta.tasks,
    sha256: sha256Hex(stateJson),
    state: stateJson,
  };
}

/** Parses a backup file's text; `source` names it in errors (a path, or "the snapshot"). */
export function parseBackupFile(content: string, source: string): BackupFile {
  let value: unknown;
  try {
    value = JSON.parse(content);
  } catch {
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `${source} is not a shoal snapshot: it is not JSON (a truncated file, or another program's?)`,
    );
  }
  return checkBackupFile(value, source);
}

/**
 * A backup file, checked whole: its format and version, its checksum, and a state this version can
 * restore. Returns the state to restore; throws one line saying what is wrong with the file.
 */
export function openBackupFile(value: unknown, source: string): { file: BackupFile; state: BackupState } {
  const file = checkBackupFile(value, source);
  if (Buffer.byteLength(file.state, 'utf8') > backupStateBytesMax)
    throw new ShoalError(
      'TOO_LARGE',
      `${source} holds ${Buffer.byteLength(file.state, 'utf8')} bytes of state; this version restores at most ${backupStateBytesMax} (what one Raft message carries)`,
    );
  let stateValue: unknown;
  try {
    stateValue = JSON.parse(file.state);
  } catch {
    throw new ShoalError('CORRUPT_DATA', `${source} is damaged: its state is not JSON`);
  }
  const parsed = backupStateSchema.safeParse(stateValue);
  if (!parsed.success)
    throw new ShoalError(
      'CORRUPT_DATA',
      `${source} holds a state this version cannot restore: ${describeIssues(parsed.error)}`,
    );
  return { file, state: parsed.data };
}

function checkBackupFile(value: unknown, source: string): BackupFile {
  const format = typeof value === 'object' && value !== null && 'format' in value ? value.format : undefined;
  if (format !== backupFormat)
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `${source} is not a shoal snapshot (it has no "format": "${backupFormat}"); shoal snapshot save writes one`,
    );
  const version = (value as { version?: unknown }).version;
  if (typeof version === 'number' && version > backupVersion)
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `${source} was written by a newer shoal (snapshot version ${version}; this one reads ${backupVersion}); restore it with that version`,
    );
  const parsed = backupFileSchema.safeParse(value);
  if (!parsed.success)
    throw new ShoalError('CORRUPT_DATA', `${source} is damaged: ${describeIssues(parsed.error)}`);
  if (sha256Hex(parsed.data.state) !== parsed.data.sha256)
    throw new ShoalError(
      'CORRUPT_DATA',
      `${source} is corrupt: its state does not match its SHA-256 checksum; restore another copy`,
    );
  return parsed.data;
}

function sha256Hex(content: string): string {
  return createHash('sha256').update(content, 'utf8').digest('hex');
}
