import { describe, expect, it } from 'vitest';
import {
  amountsOf,
  amountsOfTask,
  fitsIn,
  minus,
  normalizeRanges,
  plus,
  shortOf,
  subtractRanges,
  withinLimit,
} from './resources.ts';

describe('port ranges', () => {
  it('merge overlapping and adjacent ranges, sorted', () => {
    expect(
      normalizeRanges([
        { begin: 10, end: 12 },
        { begin: 1, end: 3 },
        { begin: 4, end: 5 },
        { begin: 11, end: 20 },
      ]),
    ).toEqual([
      { begin: 1, end: 5 },
      { begin: 10, end: 20 },
    ]);
  });

  it('subtract: holes, edges, and ranges wholly removed', () => {
    const a = [
      { begin: 1, end: 10 },
      { begin: 20, end: 30 },
      { begin: 40, end: 41 },
    ];
    const b = [
      { begin: 1, end: 2 },
      { begin: 5, end: 6 },
      { begin: 10, end: 25 },
      { begin: 40, end: 41 },
    ];
    expect(subtractRanges(a, b)).toEqual([
      { begin: 3, end: 4 },
      { begin: 7, end: 9 },
      { begin: 26, end: 30 },
    ]);
  });
});

describe('amounts', () => {
  const room = amountsOf({
    cpuMillis: 2000,
    memoryBytes: 100,
    devices: { gpu: 1 },
    ports: [{ begin: 8000, end: 8001 }],
  });

  it('fit on every dimension and port, and name the first short one', () => {
    expect(fitsIn(amountsOfTask({ cpuMillis: 2000, memoryBytes: 100, ports: [8001] }), room)).toBe(true);
    expect(shortOf(amountsOfTask({ cpuMillis: 2001, memoryBytes: 1 }), room)).toBe('CPU');
    expect(shortOf(amountsOfTask({ cpuMillis: 1, memoryBytes: 1, devices: { gpu: 2 } }), room)).toBe('gpu');
    expect(shortOf(amountsOfTask({ cpuMillis: 1, memoryBytes: 1, ports: [9000] }), room)).toBe('port 9000');
  });

  it('add and subtract without going below zero', () => {
    const task = amountsOfTask({ cpuMillis: 500, memoryBytes: 200, devices: { gpu: 1 }, ports: [8000] });
    const left = minus(room, task);
    expect(left).toEqual({
      cpuMillis: 1500,
      memoryBytes: 0,
      diskBytes: 0,
      devices: {},
      ports: [{ begin: 8001, end: 8001 }],
    });
    expect(plus(left, task).ports).toEqual([{ begin: 8000, end: 8001 }]);
  });

  it('a quota cuts room to its headroom; absent dimensions are unlimited', () => {
    const used = amountsOf({ cpuMillis: 1500, memoryBytes: 0 });
    const cut = withinLimit(room, { cpuMillis: 2000 }, used);
    expect(cut.cpuMillis).toBe(500);
    expect(cut.memoryBytes).toBe(100);
    expect(cut.devices).toEqual({ gpu: 1 });
    expect(withinLimit(room, { devices: { gpu: 0 } }, used).devices).toEqual({});
  });
});
