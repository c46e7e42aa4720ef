import { describe, expect, it } from 'vitest';
import { seededRandom } from '../shared/random.ts';
import { NodeTree, isBefore, shortfall } from './tree.ts';
import { smallestVictimSet } from './victims.ts';

const dimensions = 3;
const fitsIn = (free: Float64Array, request: Float64Array): boolean =>
  request.every((r, d) => (free[d] ?? 0) >= r);

describe('NodeTree searches agree with a scan of every node (1,000 random trees)', () => {
  it('first fit, most free, nearest few — also after updates', () => {
    const random = seededRandom(7);
    for (let round = 0; round < 1000; round++) {
      const seed = `round ${round}`;
      const slotCount = random.int(1, 40);
      const slots = [...Array(slotCount).keys()].filter(() => random.next() < 0.7);
      const capacity = slots.map(() =>
        Float64Array.from({ length: dimensions }, () => random.int(1, 9) * 100),
      );
      const free = capacity.map((c) => c.map((v) => random.int(0, v / 100 + 1) * 100));
      const at = (slot: number): number => slots.indexOf(slot);
      const tree = new NodeTree(
        dimensions,
        slots,
        slotCount,
        (slot) => capacity[at(slot)] ?? new Float64Array(dimensions),
        (slot) => free[at(slot)] ?? new Float64Array(dimensions),
      );
      for (let query = 0; query < 5; query++) {
        if (slots.length > 0 && random.next() < 0.5) {
          const i = random.int(0, slots.length);
          const f = free[i]!;
          f[random.int(0, dimensions)] = random.int(0, 9) * 100;
          tree.update(slots[i]!, f);
        }
        const request = Float64Array.from({ length: dimensions }, () => random.int(0, 5) * 100);
        const banned = new Set(slots.filter(() => random.next() < 0.2));
        const accept = (slot: number): boolean => !banned.has(slot);
        const fitting = slots.filter((s, i) => !banned.has(s) && fitsIn(free[i]!, request));
        expect(tree.firstFit(request, accept), seed).toBe(fitting[0] ?? -1);
        let most = -1;
        for (const s of fitting) if (most < 0 || free[at(s)]![0]! > free[at(most)]![0]!) most = s;
        expect(tree.mostFree(request, 0, accept), seed).toBe(most);
        const near = slots
          .map((s, i) => ({ slot: s, value: shortfall(request, free[i]!, capacity[i]!), leaf: i }))
          .filter((n) => !banned.has(n.slot) && fitsIn(capacity[at(n.slot)]!, request))
          .sort((a, b) => (isBefore(a, b) ? -1 : 1));
        const count = random.int(1, 5);
        expect(tree.nearestFew(request, count, accept), seed).toEqual(near.slice(0, count));
      }
    }
  });
});

describe('smallestVictimSet', () => {
  it('finds the fewest, then lowest, victims: exhaustive below the cut-off, a cover above (2,000 cases)', () => {
    const random = seededRandom(11);
    for (let round = 0; round < 2000; round++) {
      const n = random.int(0, 15);
      const candidates = Array.from({ length: n }, () => ({
        priority: random.int(0, 5) * 10,
        request: Float64Array.from({ length: 2 }, () => random.int(0, 4)),
      }));
      const need = Float64Array.from({ length: 2 }, () => random.int(-2, 6));
      const choice = smallestVictimSet(need, candidates);
      let best = Infinity;
      for (let mask = 0; mask < 1 << n; mask++) {
        const sum = [0, 0];
        let count = 0;
        for (let i = 0; i < n; i++)
          if (mask & (1 << i)) {
            count++;
            sum[0]! += candidates[i]!.request[0]!;
            sum[1]! += candidates[i]!.request[1]!;
          }
        if (sum[0]! >= need[0]! && sum[1]! >= need[1]!) best = Math.min(best, count);
      }
      const seed = `round ${round}`;
      if (best === Infinity) {
        expect(choice, seed).toBeNull();
        continue;
      }
      expect(choice, seed).not.toBeNull();
      const covered = [0, 1].every(
        (d) => choice!.indices.reduce((s, i) => s + candidates[i]!.request[d]!, 0) >= need[d]!,
      );
      expect(covered, seed).toBe(true);
      if (n <= 12) expect(choice!.indices.length, seed).toBe(best);
    }
  });
});
