/**
 * Choosing preemption victims on one node: the fewest running tasks whose resources, added to what is
 * free, cover a request; among sets of that size, the one whose highest priority is lowest, then whose
 * priorities sum lowest, then the first in candidate order. Exact up to `exactCandidatesMax` candidates
 * (every subset, smallest first); greedy beyond, which may pick a set one or two larger than needed.
 */
import type { Vector } from './resources.ts';

export interface VictimCandidate {
  readonly priority: number;
  readonly request: Vector;
}

export interface VictimChoice {
  /** Indices into the candidates, ascending. */
  readonly indices: number[];
  readonly priorityMax: number;
  readonly prioritySum: number;
}

/** Candidates on one node searched exhaustively: 2^12 subsets at most. */
export const exactCandidatesMax = 12;

/**
 * `need` is what the node lacks (only positive dimensions matter); candidates in the caller's order.
 * Null when no set of at most `countMax` victims covers it.
 */
export function smallestVictimSet(
  need: Vector,
  candidates: readonly VictimCandidate[],
  exactMax: number = exactCandidatesMax,
  countMax = Infinity,
): VictimChoice | null {
  const dimensions = need.length;
  if (!covers(need, candidates, allIndices(candidates.length), dimensions)) return null;
  if (!anyPositive(need)) return { indices: [], priorityMax: -Infinity, prioritySum: 0 };
  const fewest = lowerBound(need, candidates, dimensions);
  if (fewest > countMax) return null;
  if (candidates.length <= exactMax) return exact(need, candidates, dimensions, fewest, countMax);
  const choice = greedy(need, candidates, dimensions);
  return choice && choice.indices.length <= countMax ? choice : null;
}

/** No set is smaller than what the largest candidates need to cover any one dimension alone. */
function lowerBound(need: Vector, candidates: readonly VictimCandidate[], dimensions: number): number {
  let bound = 0;
  for (let d = 0; d < dimensions; d++) {
    const missing = need[d] ?? 0;
    if (missing <= 0) continue;
    const amounts = candidates.map((c) => c.request[d] ?? 0).sort((a, b) => b - a);
    let sum = 0;
    let count = 0;
    for (const amount of amounts) {
      if (sum >= missing) break;
      sum += amount;
      count++;
    }
    bound = Math.max(bound, count);
  }
  return bound;
}

function exact(
  need: Vector,
  candidates: readonly VictimCandidate[],
  dimensions: number,
  fewest: number,
  countMax: number,
): VictimChoice | null {
  const n = candidates.length;
  for (let k = Math.max(1, fewest); k <= Math.min(n, countMax); k++) {
    let best: VictimChoice | null = null;
    const indices = Array.from({ length: k }, (_, i) => i);
    for (;;) {
      if (covers(need, candidates, indices, dimensions)) {
        const choice = describe(candidates, indices);
        if (
          best === null ||
          choice.priorityMax < best.priorityMax ||
          (choice.priorityMax === best.priorityMax && choice.prioritySum < best.prioritySum)
        )
          best = choice;
      }
      // Next combination in lexicographic order.
      let i = k - 1;
      while (i >= 0 && (indices[i] ?? 0) === n - k + i) i--;
      if (i < 0) break;
      indices[i] = (indices[i] ?? 0) + 1;
      for (let j = i + 1; j < k; j++) indices[j] = (indices[j - 1] ?? 0) + 1;
    }
    if (best) return best;
  }
  return null;
}

function greedy(
  need: Vector,
  candidates: readonly VictimCandidate[],
  dimensions: number,
): VictimChoice | null {
  const remaining = Float64Array.from(need);
  const chosen: number[] = [];
  const taken = new Uint8Array(candidates.length);
  while (anyPositive(remaining)) {
    let bestIndex = -1;
    let bestCoverage = 0;
    candidates.forEach((candidate, index) => {
      if (taken[index] === 1) return;
      let coverage = 0;
      for (let d = 0; d < dimensions; d++) {
        const missing = remaining[d] ?? 0;
        if (missing > 0) coverage += Math.min(missing, candidate.request[d] ?? 0) / (need[d] ?? 1);
      }
      const bestPriority = candidates[bestIndex]?.priority ?? Infinity;
      if (
        coverage > bestCoverage ||
        (coverage === bestCoverage && coverage > 0 && candidate.priority < bestPriority)
      ) {
        bestIndex = index;
        bestCoverage = coverage;
      }
    });
    const picked = candidates[bestIndex];
    if (picked === undefined) return null;
    taken[bestIndex] = 1;
    chosen.push(bestIndex);
    for (let d = 0; d < dimensions; d++) remaining[d] = (remaining[d] ?? 0) - (picked.request[d] ?? 0);
  }
  // Drop any victim the others already cover, the highest priority first.
  const byPriorityDescending = [...chosen].sort(
    (a, b) => (candidates[b]?.priority ?? 0) - (candidates[a]?.priority ?? 0) || b - a,
  );
  let kept = [...chosen].sort((a, b) => a - b);
  for (const index of byPriorityDescending) {
    const without = kept.filter((i) => i !== index);
    if (covers(need, candidates, without, dimensions)) kept = without;
  }
  return describe(candidates, kept);
}

function covers(
  need: Vector,
  candidates: readonly VictimCandidate[],
  indices: readonly number[],
  dimensions: number,
): boolean {
  for (let d = 0; d < dimensions; d++) {
    const missing = need[d] ?? 0;
    if (missing <= 0) continue;
    let sum = 0;
    for (const index of indices) sum += candidates[index]?.request[d] ?? 0;
    if (sum < missing) return false;
  }
  return true;
}

function describe(candidates: readonly VictimCandidate[], indices: readonly number[]): VictimChoice {
  let priorityMax = -Infinity;
  let prioritySum = 0;
  for (const index of indices) {
    const priority = candidates[index]?.priority ?? 0;
    priorityMax = Math.max(priorityMax, priority);
    prioritySum += priority;
  }
  return { indices: [...indices], priorityMax, prioritySum };
}

function anyPositive(vector: Vector): boolean {
  for (const value of vector) if (value > 0) return true;
  return false;
}

function allIndices(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
