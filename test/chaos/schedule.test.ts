/**
 * The fault schedule is a pure function of its seed: the same seed replays the same faults, and every
 * fault it draws is well formed for the cluster's size and heals inside the run.
 */
import { describe, expect, it } from 'vitest';
import {
  defaultScheduleOptions,
  describeFault,
  faultKinds,
  generateSchedule,
  kindsFor,
  parseSchedule,
  type Fault,
  type ScheduleOptions,
} from '../../scripts/chaos/schedule.ts';

const tenMinutesMs = 10 * 60_000;

function nodesOf(fault: Fault): number[] {
  switch (fault.kind) {
    case 'crash':
    case 'pause':
    case 'isolate':
    case 'disk-full':
      return 'node' in fault.target ? [fault.target.node] : [fault.target.fallback];
    case 'split':
      return [...fault.minority];
    case 'one-way':
      return [...fault.from, ...fault.to];
    case 'bridge':
      return [...fault.left, ...fault.right, fault.bridge];
    case 'loss':
    case 'restart-all':
      return [];
  }
}

describe('the fault schedule', () => {
  it('is the same for the same seed, and differs for another seed', () => {
    const a = generateSchedule(42, 5, tenMinutesMs);
    const b = generateSchedule(42, 5, tenMinutesMs);
    const c = generateSchedule(43, 5, tenMinutesMs);
    expect(a).toEqual(b);
    expect(JSON.stringify(c.faults)).not.toBe(JSON.stringify(a.faults));
  });

  it('starts after the warm-up, never overlaps two faults, and heals every fault inside the run', () => {
    for (let seed = 0; seed < 60; seed++) {
      const schedule = generateSchedule(seed, 5, tenMinutesMs);
      expect(schedule.faults.length).toBeGreaterThan(10);
      let endMs = 0;
      for (const [i, scheduled] of schedule.faults.entries()) {
        expect(scheduled.id).toBe(i + 1);
        expect(scheduled.atMs).toBeGreaterThanOrEqual(defaultScheduleOptions.warmUpMs);
        expect(scheduled.atMs).toBeGreaterThanOrEqual(endMs + defaultScheduleOptions.quietMsMin);
        expect(scheduled.durationMs).toBeGreaterThanOrEqual(defaultScheduleOptions.faultMsMin);
        expect(scheduled.durationMs).toBeLessThanOrEqual(defaultScheduleOptions.faultMsMax);
        endMs = scheduled.atMs + scheduled.durationMs;
        expect(endMs).toBeLessThanOrEqual(schedule.durationMs);
      }
    }
  });

  it('draws every kind over many seeds, and only the kinds it is given', () => {
    const seen = new Set<string>();
    for (let seed = 0; seed < 50; seed++)
      for (const f of generateSchedule(seed, 5, tenMinutesMs).faults) seen.add(f.fault.kind);
    expect([...seen].sort()).toEqual([...faultKinds].sort());

    const options: ScheduleOptions = { ...defaultScheduleOptions, kinds: ['crash', 'loss'] };
    for (let seed = 0; seed < 50; seed++)
      for (const f of generateSchedule(seed, 5, tenMinutesMs, options).faults)
        expect(['crash', 'loss']).toContain(f.fault.kind);
  });

  it('draws well-formed faults: strict minorities, disjoint sides, nodes in range', () => {
    for (const nodes of [2, 3, 4, 5, 7]) {
      for (let seed = 0; seed < 30; seed++) {
        for (const { fault } of generateSchedule(seed, nodes, tenMinutesMs).faults) {
          for (const node of nodesOf(fault)) {
            expect(node).toBeGreaterThanOrEqual(0);
            expect(node).toBeLessThan(nodes);
          }
          if (fault.kind === 'split') {
            expect(fault.minority.length).toBeGreaterThan(0);
            expect(fault.minority.length).toBeLessThan(nodes / 2 + (nodes === 2 ? 1 : 0));
            expect(new Set(fault.minority).size).toBe(fault.minority.length);
          }
          if (fault.kind === 'one-way') {
            expect(fault.from.length).toBeGreaterThan(0);
            expect(fault.to.length).toBeGreaterThan(0);
            expect(fault.from.filter((n) => fault.to.includes(n))).toEqual([]);
            expect(fault.from.length + fault.to.length).toBe(nodes);
          }
          if (fault.kind === 'bridge') {
            expect(nodes).toBeGreaterThanOrEqual(3);
            expect(fault.left.length).toBeGreaterThan(0);
            expect(fault.right.length).toBeGreaterThan(0);
            const all = [...fault.left, ...fault.right, fault.bridge];
            expect(new Set(all).size).toBe(nodes);
          }
          if (fault.kind === 'loss') {
            expect(fault.probability).toBeGreaterThanOrEqual(0.05);
            expect(fault.probability).toBeLessThanOrEqual(0.3);
          }
        }
      }
    }
  });

  it('never draws a bridge for fewer than three nodes, nor a partition for one', () => {
    expect(kindsFor(2, faultKinds)).not.toContain('bridge');
    expect(kindsFor(1, faultKinds).sort()).toEqual(['crash', 'disk-full', 'pause', 'restart-all']);
  });

  it('aims some faults at the leader and some at the busiest node, with a fallback node', () => {
    const targets = generateSchedule(7, 5, tenMinutesMs).faults.flatMap((f) =>
      'target' in f.fault ? [f.fault.target] : [],
    );
    expect(targets.some((t) => 'leader' in t)).toBe(true);
    expect(targets.some((t) => 'busiest' in t)).toBe(true);
    expect(targets.some((t) => 'node' in t)).toBe(true);
  });

  it('round-trips through JSON and refuses a schedule with an unknown fault', () => {
    const schedule = generateSchedule(9, 3, 60_000);
    expect(parseSchedule(JSON.stringify(schedule))).toEqual(schedule);
    const bad = { ...schedule, faults: [{ id: 1, atMs: 0, durationMs: 1000, fault: { kind: 'meteor' } }] };
    expect(() => parseSchedule(JSON.stringify(bad))).toThrow(/unknown fault kind meteor/);
    expect(() => parseSchedule('{"seed": 1}')).toThrow(/a schedule file holds/);
  });

  it('describes faults in words', () => {
    const name = (n: number): string => `n${n + 1}`;
    expect(describeFault({ kind: 'crash', target: { node: 1 }, tasks: 'die' }, name)).toBe(
      'SIGKILL n2 and its tasks (machine crash), then restart it',
    );
    expect(describeFault({ kind: 'bridge', left: [0], right: [2, 3], bridge: 1 }, name)).toBe(
      'partition n1 | n3,n4, bridged by n2',
    );
    expect(describeFault({ kind: 'isolate', target: { leader: true, fallback: 2 } }, name)).toBe(
      'isolate the leader (else n3) from every other node',
    );
    expect(describeFault({ kind: 'pause', target: { busiest: true, fallback: 0 } }, name)).toBe(
      'SIGSTOP the busiest node (else n1), then SIGCONT',
    );
  });
});
