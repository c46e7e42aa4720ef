/**
 * The allocator's orderings: how pending tasks, victims, preemption candidates, nearest nodes and
 * single-victim entries rank, and the binary searches that keep lists in those orders. Pure functions
 * over the records (records.ts); every order ends in a total tie-break (id or node slot), so plans never
 * depend on the order things were added. In: records or their fields. Out: comparisons and positions.
 */
import { isBefore } from './tree.ts';
import type { AllocatorTask } from './types.ts';
import type { NearEntry, NodeEntry, Preemptible, RunningEntry, SingleEntry } from './records.ts';

type Pending = Pick<AllocatorTask, 'id' | 'priority' | 'submitIndex'>;

/** Placement order: higher priority first, then earlier submission, then id. */
export function comparePending(a: Pending, b: Pending): number {
  return b.priority - a.priority || a.submitIndex - b.submitIndex || compareIds(a.id, b.id);
}

/** Ids by code unit, as a tie-break that never depends on locale. */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Fewer victims, then a lower highest priority, then a lower sum, then the earlier node. */
export function isBetter(a: Preemptible, b: Preemptible): boolean {
  if (a.victims.length !== b.victims.length) return a.victims.length < b.victims.length;
  if (a.priorityMax !== b.priorityMax) return a.priorityMax < b.priorityMax;
  if (a.prioritySum !== b.prioritySum) return a.prioritySum < b.prioritySum;
  return a.node.slot < b.node.slot;
}

/** Victim order on a node: lower priority first, then id; a missing `b` ranks before `a`. */
export function compareVictims(a: RunningEntry, b: RunningEntry | undefined): number {
  if (!b) return 1;
  return a.priority - b.priority || compareIds(a.id, b.id);
}

/** Single-victim entries: the lower victim priority first, then node order. */
export function compareSingles(a: SingleEntry, b: SingleEntry): number {
  return a.priority - b.priority || a.node.slot - b.node.slot;
}

/** Inserts into a list kept in `compareSingles` order, after any equal entry. */
export function insertSingle(singles: SingleEntry[], entry: SingleEntry): void {
  let low = 0;
  let high = singles.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    const other = singles[middle];
    if (other && compareSingles(other, entry) < 0) low = middle + 1;
    else high = middle;
  }
  singles.splice(low, 0, entry);
}

/** The nearest entry whose node is not held back in pass `passId`, or null. */
export function firstUnheld(entries: readonly NearEntry[], passId: number): NearEntry | null {
  for (const entry of entries) if (entry.node.reservedPass !== passId) return entry;
  return null;
}

/** Inserts into a list kept nearest first. */
export function insertNear(entries: NearEntry[], entry: NearEntry): void {
  let low = 0;
  let high = entries.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (isBefore(entry, entries[middle])) high = middle;
    else low = middle + 1;
  }
  entries.splice(low, 0, entry);
}

/** Where a node with `slot` is, or would go, in a list in slot order. */
export function slotPosition(nodes: readonly NodeEntry[], slot: number): number {
  let low = 0;
  let high = nodes.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if ((nodes[middle]?.slot ?? Infinity) < slot) low = middle + 1;
    else high = middle;
  }
  return low;
}
