/**
 * Periodic jobs (the Chronos idea, built in): a cron schedule with a time zone launches a batch job per
 * slot. Exactly once per slot, across leader failovers: the leader proposes a launch naming its slot, and
 * the state refuses a slot at or before the last one it launched (state.ts), so two leaders, or one leader
 * retrying, cannot launch a slot twice. A slot missed while there was no leader is run once when one
 * appears, or skipped, by the job's `missed` policy; only the latest missed slot is considered (a leader
 * back after a day does not launch a day of runs). Pure: time comes in as nowMs.
 */
import { Cron } from 'croner';
import type { Command } from './command.ts';
import type { PeriodicSpec } from './job.ts';
import type { JobRecord } from './jobs.ts';

export type LaunchPeriodicCommand = Extract<Command, { type: 'launchPeriodic' }>;

/** A slot is missed when no launch happened this long after it (the leader looks every half second). */
export const periodicMissedAfterMs = 10_000;
/** Launches kept per periodic job: older ended ones are forgotten when a new one starts. */
export const periodicLaunchesRetainedMax = 10;

/** The latest slot of the schedule in (afterMs, nowMs], and whether it was missed; null when none. */
export function periodicDue(
  periodic: PeriodicSpec,
  afterMs: number,
  nowMs: number,
): { readonly slotMs: number; readonly missed: boolean } | null {
  const cron = new Cron(periodic.cron, {
    paused: true,
    ...(periodic.timezone === undefined ? {} : { timezone: periodic.timezone }),
  });
  // previousRuns gives the runs strictly before its reference: +1 ms makes a slot at nowMs count.
  const [latest] = cron.previousRuns(1, new Date(nowMs + 1));
  if (latest === undefined) return null;
  const slotMs = latest.getTime();
  if (slotMs <= afterMs) return null;
  return { slotMs, missed: nowMs - slotMs > periodicMissedAfterMs };
}

/** The name of the batch job a periodic job launches for a slot: its name and the slot in base 36 seconds. */
export function periodicLaunchName(name: string, slotMs: number): string {
  return `${name}-${Math.floor(slotMs / 1000).toString(36)}`;
}

/**
 * The launches the leader should propose now: one per periodic job whose next slot is due, skipping
 * those with a launch in flight. A missed slot is proposed as a skip when the job says so (recorded, so
 * the next leader does not consider it again).
 */
export function planPeriodicLaunches(
  jobs: Iterable<JobRecord>,
  nowMs: number,
  inFlight: ReadonlySet<string>,
): LaunchPeriodicCommand[] {
  const commands: LaunchPeriodicCommand[] = [];
  for (const job of jobs) {
    const periodic = job.spec.periodic;
    if (job.spec.type !== 'periodic' || periodic === undefined || job.stopped) continue;
    if (inFlight.has(`${job.namespace}/${job.name}`)) continue;
    const due = periodicDue(periodic, job.lastLaunchMs ?? job.createdAtMs, nowMs);
    if (due === null) continue;
    commands.push({
      type: 'launchPeriodic',
      namespace: job.namespace,
      name: job.name,
      slotMs: due.slotMs,
      launch: !due.missed || (periodic.missed ?? 'run') === 'run',
      atMs: nowMs,
    });
  }
  return commands;
}
