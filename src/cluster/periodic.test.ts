import { describe, expect, it } from 'vitest';
import { seededRandom } from '../shared/random.ts';
import { decodeCommand, encodeCommand, type Command } from './command.ts';
import type { JobSpec } from './job.ts';
import {
  periodicDue,
  periodicLaunchName,
  periodicMissedAfterMs,
  planPeriodicLaunches,
  type LaunchPeriodicCommand,
} from './periodic.ts';
import { ClusterState } from './state.ts';

const MiB = 1024 * 1024;
const minute = 60_000;
const at = (iso: string): number => Date.parse(iso);

const nightly = (cron: string, extra: Partial<NonNullable<JobSpec['periodic']>> = {}): JobSpec => ({
  name: 'report',
  type: 'periodic',
  periodic: { cron, ...extra },
  task: { driver: 'exec', command: ['sleep', '1'], cpuMillis: 100, memoryMiB: 16 },
});

function cluster(): { state: ClusterState; apply: (command: Command) => void } {
  const state = new ClusterState();
  let index = 0;
  const apply = (command: Command): void => {
    state.apply(++index, decodeCommand(index, encodeCommand(command)));
  };
  apply({
    type: 'upsertNode',
    node: {
      id: 'n1',
      name: 'n1',
      address: 'h:1',
      capacity: { cpuMillis: 4000, memoryBytes: 4096 * MiB },
      labels: {},
      drivers: ['exec'],
    },
    atMs: 0,
  });
  return { state, apply };
}

/** The batch jobs a periodic job launched, by name. */
function launches(state: ClusterState): string[] {
  return [...state.jobs.values()]
    .filter((job) => job.parent === 'report')
    .map((job) => job.name)
    .sort();
}

describe('periodic schedules', () => {
  it('finds the latest slot after the last launch, in the job’s time zone', () => {
    const every5 = { cron: '*/5 * * * *' };
    expect(periodicDue(every5, at('2026-12-05T00:05:00Z'), at('2026-12-05T00:12:30Z'))).toEqual({
      slotMs: at('2026-12-05T00:10:00Z'),
      missed: true,
    });
    expect(periodicDue(every5, at('2026-12-05T00:10:00Z'), at('2026-12-05T00:12:30Z'))).toBeNull();
    expect(periodicDue(every5, 0, at('2026-12-05T00:10:00.400Z'))?.missed).toBe(false);
    // 09:00 in Berlin is 08:00 UTC in December.
    const berlin = { cron: '0 9 * * *', timezone: 'Europe/Berlin' };
    expect(periodicDue(berlin, at('2026-12-04T12:00:00Z'), at('2026-12-05T10:00:00Z'))?.slotMs).toBe(
      at('2026-12-05T08:00:00Z'),
    );
  });

  it('proposes a due launch, a missed slot as a skip when the job says so, and nothing in flight or stopped', () => {
    const { state, apply } = cluster();
    apply({
      type: 'putJob',
      job: nightly('*/5 * * * *', { missed: 'skip' }),
      atMs: at('2026-12-05T00:00:30Z'),
    });
    const job = state.jobs.get('default/report');
    if (!job) throw new Error('no job');
    const onTime = planPeriodicLaunches([job], at('2026-12-05T00:05:00.300Z'), new Set());
    expect(onTime).toMatchObject([
      { type: 'launchPeriodic', slotMs: at('2026-12-05T00:05:00Z'), launch: true },
    ]);
    const late = planPeriodicLaunches(
      [job],
      at('2026-12-05T00:05:00Z') + periodicMissedAfterMs + 1,
      new Set(),
    );
    expect(late).toMatchObject([{ launch: false }]);
    expect(planPeriodicLaunches([job], at('2026-12-05T00:05:01Z'), new Set(['default/report']))).toEqual([]);
  });
});

describe('periodic launches in the state', () => {
  it('launches a slot once as a batch job of its own, whoever proposes it again', () => {
    const { state, apply } = cluster();
    apply({ type: 'putJob', job: nightly('*/5 * * * *'), atMs: at('2026-12-05T00:00:30Z') });
    const slot = at('2026-12-05T00:05:00Z');
    const launch: Command = {
      type: 'launchPeriodic',
      namespace: 'default',
      name: 'report',
      slotMs: slot,
      launch: true,
      atMs: slot + 100,
    };
    apply(launch);
    apply({ ...launch, atMs: slot + 200 });
    apply({ ...launch, slotMs: slot - 5 * minute });
    expect(launches(state)).toEqual([periodicLaunchName('report', slot)]);
    const child = state.jobs.get(`default/${periodicLaunchName('report', slot)}`);
    expect(child).toMatchObject({ version: 1, parent: 'report', spec: { type: 'batch' } });
    expect(child?.spec.periodic).toBeUndefined();
    expect(state.jobTasks('default', child?.name ?? '')).toHaveLength(1);
    expect(state.jobs.get('default/report')?.lastLaunchMs).toBe(slot);
  });

  it('skips a slot while the previous launch runs when overlap is prohibited', () => {
    const { state, apply } = cluster();
    apply({ type: 'putJob', job: nightly('*/5 * * * *', { prohibitOverlap: true }), atMs: 0 });
    const slot = at('2026-12-05T00:05:00Z');
    apply({
      type: 'launchPeriodic',
      namespace: 'default',
      name: 'report',
      slotMs: slot,
      launch: true,
      atMs: slot,
    });
    apply({
      type: 'launchPeriodic',
      namespace: 'default',
      name: 'report',
      slotMs: slot + 5 * minute,
      launch: true,
      atMs: slot + 5 * minute,
    });
    expect(launches(state)).toEqual([periodicLaunchName('report', slot)]);
    expect(state.jobs.get('default/report')?.lastLaunchMs).toBe(slot + 5 * minute);
  });

  it('launches through leader failovers exactly once per slot: never twice, never a slot led on time missed (50 seeds)', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const random = seededRandom(seed);
      const { state, apply } = cluster();
      const start = at('2026-12-05T00:00:00Z');
      const missed = random.next() < 0.5 ? 'run' : 'skip';
      apply({ type: 'putJob', job: nightly('* * * * *', { missed }), atMs: start });
      // A minute-by-minute schedule over an hour, a tick every second while there is a leader. Leaders come
      // and go; a proposal may be lost (its leader crashed before the commit) or committed twice (a new
      // leader proposed the same slot from a state that did not have the first yet).
      let leader = true;
      const launchedPerSlot = new Map<number, number>();
      const ledTicks = new Set<number>();
      let nowMs = start;
      const launch = (command: LaunchPeriodicCommand): void => {
        const name = periodicLaunchName('report', command.slotMs);
        const before = state.jobs.has(`default/${name}`);
        apply(command);
        if (!before && state.jobs.has(`default/${name}`))
          launchedPerSlot.set(command.slotMs, (launchedPerSlot.get(command.slotMs) ?? 0) + 1);
      };
      while (nowMs < start + 60 * minute) {
        nowMs += 1000;
        if (random.next() < 0.008) leader = !leader;
        if (!leader) continue;
        ledTicks.add(nowMs);
        for (const command of planPeriodicLaunches(state.jobs.values(), nowMs, new Set())) {
          const fate = random.next();
          if (fate < 0.1) continue;
          launch(command);
          if (fate > 0.9) launch({ ...command, atMs: command.atMs + 300 });
        }
        // Launched instances end, so the state does not fill.
        for (const task of [...state.tasks.values()])
          if (task.state === 'pending') apply({ type: 'killTask', taskId: task.id, atMs: nowMs });
      }
      for (const [slot, count] of launchedPerSlot) expect(count, `seed ${seed}, slot ${slot}`).toBe(1);
      // A slot with a leader on every tick of its first 10 s is launched, in both policies.
      for (let slot = start + minute; slot < start + 60 * minute - periodicMissedAfterMs; slot += minute) {
        let led = true;
        for (let tick = slot + 1000; tick <= slot + periodicMissedAfterMs; tick += 1000)
          led &&= ledTicks.has(tick);
        if (led) expect(launchedPerSlot.get(slot), `seed ${seed}, slot ${slot}`).toBe(1);
      }
      // With "skip", a slot is launched only by a leader that saw it in time.
      if (missed === 'skip')
        for (const slot of launchedPerSlot.keys())
          expect([...ledTicks].some((tick) => tick >= slot && tick <= slot + periodicMissedAfterMs)).toBe(
            true,
          );
    }
  });
});
