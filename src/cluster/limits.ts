/**
 * The task limits of the replicated state: how many live tasks the cluster accepts, and how many ended
 * tasks it remembers and for how long. They bound what every node holds in memory, because every node
 * applies the whole log to a state of its own.
 *
 * They are replicated, never read from a node's own configuration while applying: apply must reach the
 * same state on every node, so a node's flag cannot decide there. The ready leader proposes its
 * configured limits (`setTaskLimits`) when they differ from the state's, as a Nomad leader's GC runs on its
 * own server's thresholds and etcd's leader runs its compactor; the log then says which limits held when.
 * Entries from before the first `setTaskLimits` were applied under taskLimitsBefore, so they replay alike.
 */
import * as z from 'zod/mini';
import { kibibyte } from '../shared/units.ts';
import { whole } from '../shared/schema.ts';

export interface TaskLimits {
  /** Live (non-terminal) tasks the cluster holds at most; a submission beyond it is refused. */
  readonly liveTasksMax: number;
  /** Ended plain tasks (not a job's) kept for `shoal ps` and `shoal logs`; the oldest ended are forgotten. */
  readonly terminalTasksRetainedMax: number;
  /**
   * How long an ended plain task is kept: it is forgotten by the first command whose time is more than this
   * after the time of the command that ended it (times carried in committed commands, never a node's clock
   * while applying); null: kept until the count bound forgets it.
   */
  readonly terminalTaskRetentionMs: number | null;
}

/** What held before limits were replicated: a state or log without `setTaskLimits` is applied under these. */
export const taskLimitsBefore: TaskLimits = {
  liveTasksMax: 200_000,
  terminalTasksRetainedMax: 10_000,
  terminalTaskRetentionMs: null,
};

/**
 * Resident memory one live task costs every node that applies the log, rounded up: 1,928 bytes of RSS per
 * task over 100,000 running tasks on 100 nodes, each with its events (submitted, assigned, running) and the
 * state's indexes (issue 19).
 */
export const liveTaskBytes = 2 * kibibyte;
/** The share of a machine's memory live tasks may take by default; the rest is the node's and its tasks'. */
export const liveTasksMemoryShare = 0.5;
/** The bounds of --live-tasks-max: at least one task; at most what no machine holds (200 GiB of tasks). */
export const liveTasksMaxMin = 1;
export const liveTasksMaxMax = 100_000_000;
/**
 * The bounds of --ended-tasks-max. At least one: the task a command ends is kept through that command, so
 * the events derived from it (events.ts; `shoal run` waits for them) still find it.
 */
export const terminalTasksRetainedMaxMin = 1;
export const terminalTasksRetainedMaxMax = 1_000_000;
/** Ended plain tasks kept by default: ps and logs of the recent past, ~20 MiB. */
export const terminalTasksRetainedMaxDefault = 10_000;
/** How long ended plain tasks are kept by default (Nomad collects terminal evaluations after 1 h). */
export const terminalTaskRetentionMsDefault = 60 * 60_000;
/** The longest retention by age: a year (longer is "keep by count only"). */
export const terminalTaskRetentionMsMax = 365 * 24 * 60 * 60_000;

/**
 * The default live-task limit of a machine with `totalMemoryBytes`: liveTasksMemoryShare of it at
 * liveTaskBytes each, e.g. 8 GiB → 2,097,152 tasks, 1 GiB → 262,144.
 */
export function liveTasksMaxForMemory(totalMemoryBytes: number): number {
  const tasks = Math.floor((totalMemoryBytes * liveTasksMemoryShare) / liveTaskBytes);
  return Math.min(liveTasksMaxMax, Math.max(liveTasksMaxMin, tasks));
}

export const taskLimitsSchema = z.strictObject({
  liveTasksMax: whole(liveTasksMaxMin, liveTasksMaxMax),
  terminalTasksRetainedMax: whole(terminalTasksRetainedMaxMin, terminalTasksRetainedMaxMax),
  terminalTaskRetentionMs: z.nullable(whole(0, terminalTaskRetentionMsMax)),
});

/** Whether two sets of limits are the same. */
export function sameTaskLimits(a: TaskLimits, b: TaskLimits): boolean {
  return (
    a.liveTasksMax === b.liveTasksMax &&
    a.terminalTasksRetainedMax === b.terminalTasksRetainedMax &&
    a.terminalTaskRetentionMs === b.terminalTaskRetentionMs
  );
}

/** Why a submission of `adding` tasks is refused, and what to do: one text for the node and the state. */
export function liveTasksRefusal(live: number, adding: number, limits: TaskLimits): string {
  const tasks = adding === 1 ? 'one more task' : `${adding} more tasks`;
  return (
    `the cluster holds ${live} live tasks and accepts at most ${limits.liveTasksMax}, so not ${tasks}: ` +
    'wait for tasks to end, stop some (shoal kill, shoal job stop), or, if every node has the memory ' +
    `(${liveTaskBytes / kibibyte} KiB a task), raise shoal agent --live-tasks-max on every node (the leader's applies)`
  );
}
