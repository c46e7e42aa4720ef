/**
 * Jobs as the replicated state keeps them: each job's current spec and version, the versions before it
 * (bounded), and per group the version whose task spec its instances must have. Pure records and the
 * decisions about them (what a new version changes, which reschedule policy applies); the state applies
 * them (state.ts) and the reconciler (reconcile.ts) turns a job and its tasks into starts and stops.
 */
import * as z from 'zod/mini';
import { whole } from '../shared/schema.ts';
import { defaultNamespace } from '../allocator/index.ts';
import {
  instanceTaskSpec,
  jobGroups,
  storedJobSpecSchema,
  jobVersionsRetainedMax,
  type JobSpec,
  type RescheduleSpec,
} from './job.ts';

export interface JobVersionRecord {
  readonly version: number;
  readonly spec: JobSpec;
  /** When and at which log index it was applied. */
  readonly atMs: number;
  readonly index: number;
}

export interface JobRecord {
  readonly namespace: string;
  readonly name: string;
  version: number;
  spec: JobSpec;
  /** Per group: the version at which its task spec last changed; older instances are replaced. */
  groupVersions: Record<string, number>;
  /** `shoal job stop`: its instances stop and none start until it is applied again. */
  stopped: boolean;
  readonly createIndex: number;
  /** When it was first applied: a periodic job launches slots after it. */
  readonly createdAtMs: number;
  /** The log index of its last change: `job apply --check-index` compares it. */
  modifyIndex: number;
  updatedAtMs: number;
  /** The versions kept, oldest first, the current one last. */
  history: JobVersionRecord[];
  /** Periodic jobs: the schedule slot (ms since the epoch) of the last launch; null before the first. */
  lastLaunchMs: number | null;
  /** A periodic job's launch: the periodic job it was launched by. */
  readonly parent?: string;
  /** service jobs: the newest version whose deployment succeeded (auto-revert goes back to it). */
  stableVersion?: number;
  /**
   * Per group: the retained versions whose spec of the group is the current one (derived from history; an
   * instance made at any of them is current). Absent in records from before deployments: then every
   * version from groupVersions' on counts.
   */
  currentVersions?: Record<string, number[]>;
}

const jobVersionRecordSchema = z.strictObject({
  version: whole(1),
  spec: storedJobSpecSchema,
  atMs: whole(0),
  index: whole(0),
});

/** A job record in a snapshot or backup, validated like a command. */
export const jobRecordSchema = z.strictObject({
  namespace: z.string(),
  name: z.string(),
  version: whole(1),
  spec: storedJobSpecSchema,
  groupVersions: z.record(z.string(), whole(1)),
  stopped: z.boolean(),
  createIndex: whole(0),
  createdAtMs: whole(0),
  modifyIndex: whole(0),
  updatedAtMs: whole(0),
  history: z.array(jobVersionRecordSchema),
  lastLaunchMs: z.nullable(whole(0)),
  parent: z.exactOptional(z.string()),
  stableVersion: z.exactOptional(whole(1)),
  currentVersions: z.exactOptional(z.record(z.string(), z.array(whole(1)))),
});

/** Where a job lives in the state: its namespace and name. */
export function jobKey(namespace: string | undefined, name: string): string {
  return `${namespace ?? defaultNamespace}/${name}`;
}

/**
 * The version each group's instances must have after `spec` becomes `version`: a group whose instances'
 * task spec is unchanged keeps its version (a count change, or another group's change, touches nothing).
 */
export function groupSpecVersions(
  previous: JobRecord | undefined,
  spec: JobSpec,
  version: number,
): Record<string, number> {
  const before = new Map(
    previous === undefined
      ? []
      : jobGroups(previous.spec).map((group) => [group.name, instanceSignature(previous.spec, group.name)]),
  );
  const versions: Record<string, number> = {};
  for (const group of jobGroups(spec)) {
    const kept = previous?.groupVersions[group.name];
    versions[group.name] =
      kept !== undefined && before.get(group.name) === instanceSignature(spec, group.name) ? kept : version;
  }
  return versions;
}

/**
 * Per group of the newest version in `history`, the retained versions whose spec of that group equals the
 * newest's (the newest itself included), in order. After a revert, the reverted-to version is among them,
 * so its instances are not replaced again.
 */
export function groupCurrentVersions(history: readonly JobVersionRecord[]): Record<string, number[]> {
  const newest = history.at(-1);
  if (newest === undefined) return {};
  const result: Record<string, number[]> = {};
  for (const group of jobGroups(newest.spec)) {
    const signature = instanceSignature(newest.spec, group.name);
    result[group.name] = history
      .filter((record) => instanceSignature(record.spec, group.name) === signature)
      .map((record) => record.version);
  }
  return result;
}

/** What an instance of a group runs, as text to compare (the spec of slot 0; slots differ only by name). */
function instanceSignature(spec: JobSpec, groupName: string): string {
  const group = jobGroups(spec).find((candidate) => candidate.name === groupName);
  if (!group) return '';
  return JSON.stringify(
    group.tasks.map((task) =>
      instanceTaskSpec({ ...spec, type: 'service' }, group, { group: group.name, task: task.name, slot: 0 }),
    ),
  );
}

/** The reschedule policy of a job, its defaults filled in by type (Nomad's, in spirit). */
export function resolvedReschedule(spec: JobSpec): Required<RescheduleSpec> {
  const given = spec.reschedule;
  const batch = spec.type === 'batch' || spec.type === 'periodic';
  return {
    policy: given?.policy ?? 'always',
    attempts: given?.attempts === undefined ? (batch ? 3 : null) : given.attempts,
    delayMs: given?.delayMs ?? 1000,
  };
}

/** Appends a version to a job's history, dropping the oldest beyond the bound. */
export function withVersion(
  history: readonly JobVersionRecord[],
  record: JobVersionRecord,
): JobVersionRecord[] {
  const next = [...history, record];
  return next.slice(Math.max(0, next.length - jobVersionsRetainedMax));
}

/** One field a new version changes: where, and the value before and after (absent: none). */
export interface JobDiffEntry {
  readonly path: string;
  readonly before?: unknown;
  readonly after?: unknown;
}

/** The fields that differ between two specs, as paths like `groups[0].task.memoryMiB`, in document order. */
export function diffJobSpecs(before: JobSpec | undefined, after: JobSpec): JobDiffEntry[] {
  const entries: JobDiffEntry[] = [];
  const walk = (path: string, a: unknown, b: unknown): void => {
    if (JSON.stringify(a) === JSON.stringify(b)) return;
    if (Array.isArray(a) && Array.isArray(b)) {
      for (let i = 0; i < Math.max(a.length, b.length); i++) walk(`${path}[${i}]`, a[i], b[i]);
      return;
    }
    if (isPlainObject(a) && isPlainObject(b)) {
      const keys = [...new Set([...Object.keys(b), ...Object.keys(a)])];
      for (const key of keys) walk(path === '' ? key : `${path}.${key}`, a[key], b[key]);
      return;
    }
    entries.push({
      path: path === '' ? 'job' : path,
      ...(a === undefined ? {} : { before: a }),
      ...(b === undefined ? {} : { after: b }),
    });
  };
  walk('', before, after);
  return entries;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
