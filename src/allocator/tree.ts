/**
 * The node index: a complete binary tree over a set of nodes (leaves in node order), each inner vertex
 * holding the per-dimension maximum of free and of capacity below it. A subtree whose maximum is short on
 * any dimension holds no node that fits, so a search skips it whole; one free-capacity change rewrites one
 * root path. Maxima per dimension alone prune badly once a cluster fragments (one node has CPU left,
 * another memory), so each vertex also keeps, per CPU step (250 millicores, doubling), the most memory
 * free on any node below with at least that much CPU free: a node fits only if both hold together.
 * Three searches, all exact and tie-broken by leaf order (so results never depend on history):
 * the first node that fits (bin-packing), the fitting node with the most of one dimension free (spread),
 * and the node nearest to fitting (reservations), by branch and bound.
 */
import { assert } from '../shared/assert.ts';
import { cpuDimension, memoryDimension, type Vector } from './resources.ts';

/** Nodes one index holds; a limit so leaf positions fit an Int32Array comfortably. */
export const treeLeavesMax = 1 << 22;

/** CPU steps (millicores) for the joint CPU-and-memory maxima. */
const cpuSteps = [250, 500, 1000, 2000, 4000, 8000, 16000, 32000];
const steps = cpuSteps.length;

/** The largest step at or below the request's CPU, or -1 (then only per-dimension maxima prune). */
function stepOf(request: Vector): number {
  const cpu = request[cpuDimension] ?? 0;
  let step = -1;
  while (step + 1 < steps && (cpuSteps[step + 1] ?? Infinity) <= cpu) step++;
  return step;
}

/** How far `free` is from fitting `request`, each dimension as a share of the node's capacity. */
export function shortfall(request: Vector, free: Vector, capacity: Vector): number {
  let total = 0;
  for (let d = 0; d < request.length; d++) {
    const need = request[d] ?? 0;
    if (need <= 0) continue;
    const missing = need - (free[d] ?? 0);
    if (missing > 0) total += missing / (capacity[d] ?? 0);
  }
  return total;
}

/** A node near to fitting: its slot, its shortfall and its leaf position (the tie-break). */
export interface Near {
  readonly slot: number;
  readonly value: number;
  readonly leaf: number;
}

/** Nearer, or as near and earlier in leaf order. */
export function isBefore(
  a: Pick<Near, 'value' | 'leaf'>,
  b: Pick<Near, 'value' | 'leaf'> | undefined,
): boolean {
  return b === undefined || a.value < b.value || (a.value === b.value && a.leaf < b.leaf);
}

export class NodeTree {
  readonly dimensions: number;
  /** Leaves, a power of two; leaves past `size` are empty. */
  readonly width: number;
  readonly size: number;
  /** Leaf → node slot (-1 for empty leaves). */
  private readonly slots: Int32Array;
  /** Node slot → leaf (-1 when the node is not in this set). */
  private readonly leaves: Int32Array;
  private readonly free: Float64Array;
  private readonly capacity: Float64Array;
  /** Per vertex and CPU step: the most memory free on a node below with at least that CPU free. */
  private readonly joint: Float64Array;
  private readonly stack: Int32Array;
  private readonly freeOf: (slot: number) => Vector;
  /** Leaves whose node changed since the last search; rewritten (once each) before the next. */
  private readonly stale: Int32Array;
  private readonly staleFlags: Uint8Array;
  private staleCount = 0;

  /** `slots` ascending; `slotCount` bounds every slot. */
  constructor(
    dimensions: number,
    slots: readonly number[],
    slotCount: number,
    capacityOf: (slot: number) => Vector,
    freeOf: (slot: number) => Vector,
  ) {
    assert(slots.length <= treeLeavesMax, `a node index holds at most ${treeLeavesMax} nodes`);
    this.dimensions = dimensions;
    this.size = slots.length;
    this.freeOf = freeOf;
    this.stale = new Int32Array(slots.length);
    this.staleFlags = new Uint8Array(slots.length);
    let width = 1;
    let depth = 0;
    while (width < slots.length) {
      width *= 2;
      depth++;
    }
    this.width = width;
    this.slots = new Int32Array(width).fill(-1);
    this.leaves = new Int32Array(slotCount).fill(-1);
    this.free = new Float64Array(2 * width * dimensions).fill(-1);
    this.capacity = new Float64Array(2 * width * dimensions).fill(-1);
    this.joint = new Float64Array(2 * width * steps).fill(-1);
    this.stack = new Int32Array(2 * depth + 4);
    slots.forEach((slot, leaf) => {
      assert(leaf === 0 || slot > (slots[leaf - 1] ?? -1), 'tree slots are ascending');
      this.slots[leaf] = slot;
      this.leaves[slot] = leaf;
      const at = (width + leaf) * dimensions;
      const free = freeOf(slot);
      this.free.set(free, at);
      this.capacity.set(capacityOf(slot), at);
      this.setJointLeaf(width + leaf, free);
    });
    for (let i = width - 1; i >= 1; i--) {
      const at = i * dimensions;
      const left = 2 * i * dimensions;
      const right = left + dimensions;
      for (let d = 0; d < dimensions; d++) {
        this.free[at + d] = Math.max(this.free[left + d] ?? -1, this.free[right + d] ?? -1);
        this.capacity[at + d] = Math.max(this.capacity[left + d] ?? -1, this.capacity[right + d] ?? -1);
      }
      this.joinAt(i);
    }
  }

  private setJointLeaf(vertex: number, free: Vector): void {
    const cpu = free[cpuDimension] ?? -1;
    const memory = free[memoryDimension] ?? -1;
    for (let s = 0; s < steps; s++)
      this.joint[vertex * steps + s] = cpu >= (cpuSteps[s] ?? Infinity) ? memory : -1;
  }

  /** Recomputes vertex i's joint maxima from its children; true if any changed. */
  private joinAt(i: number): boolean {
    const at = i * steps;
    const left = 2 * i * steps;
    const right = left + steps;
    let changed = false;
    for (let s = 0; s < steps; s++) {
      const value = Math.max(this.joint[left + s] ?? -1, this.joint[right + s] ?? -1);
      if (this.joint[at + s] !== value) {
        this.joint[at + s] = value;
        changed = true;
      }
    }
    return changed;
  }

  contains(slot: number): boolean {
    return (this.leaves[slot] ?? -1) >= 0;
  }

  /** Position of the node in leaf order, or -1. */
  leafOf(slot: number): number {
    return this.leaves[slot] ?? -1;
  }

  /**
   * The node's free capacity changed: it is read again (through `freeOf`) before the next search. A
   * node that changes many times between searches of this tree costs one root path, not many.
   */
  changed(slot: number): void {
    const leaf = this.leaves[slot] ?? -1;
    if (leaf < 0 || this.staleFlags[leaf] === 1) return;
    this.staleFlags[leaf] = 1;
    this.stale[this.staleCount++] = leaf;
  }

  private refresh(): void {
    for (let i = 0; i < this.staleCount; i++) {
      const leaf = this.stale[i] ?? 0;
      this.staleFlags[leaf] = 0;
      const slot = this.slots[leaf] ?? -1;
      if (slot >= 0) this.update(slot, this.freeOf(slot));
    }
    this.staleCount = 0;
  }

  /** The node's free capacity is now `free`. */
  update(slot: number, free: Vector): void {
    const leaf = this.leaves[slot] ?? -1;
    if (leaf < 0) return;
    const dimensions = this.dimensions;
    let i = this.width + leaf;
    this.free.set(free, i * dimensions);
    this.setJointLeaf(i, free);
    i >>= 1;
    while (i >= 1) {
      const at = i * dimensions;
      const left = 2 * i * dimensions;
      const right = left + dimensions;
      let changed = this.joinAt(i);
      for (let d = 0; d < dimensions; d++) {
        const value = Math.max(this.free[left + d] ?? -1, this.free[right + d] ?? -1);
        if (this.free[at + d] !== value) {
          this.free[at + d] = value;
          changed = true;
        }
      }
      if (!changed) return;
      i >>= 1;
    }
  }

  /** The first node in leaf order whose free fits `request` and that `accept`s, or -1. */
  firstFit(request: Vector, accept: (slot: number) => boolean): number {
    if (this.size === 0) return -1;
    this.refresh();
    const step = stepOf(request);
    const stack = this.stack;
    let top = 0;
    stack[top++] = 1;
    while (top > 0) {
      const i = stack[--top] ?? 1;
      if (!this.freeFits(i, request, step)) continue;
      if (i >= this.width) {
        const slot = this.slots[i - this.width] ?? -1;
        if (slot >= 0 && accept(slot)) return slot;
        continue;
      }
      stack[top++] = 2 * i + 1;
      stack[top++] = 2 * i;
    }
    return -1;
  }

  /** The fitting, accepted node with the most free on `dimension` (first in leaf order on ties), or -1. */
  mostFree(request: Vector, dimension: number, accept: (slot: number) => boolean): number {
    if (this.size === 0) return -1;
    this.refresh();
    const dimensions = this.dimensions;
    const step = stepOf(request);
    const stack = this.stack;
    let best = -Infinity;
    let bestLeaf = this.width;
    let bestSlot = -1;
    let top = 0;
    stack[top++] = 1;
    while (top > 0) {
      const i = stack[--top] ?? 1;
      if (!this.freeFits(i, request, step)) continue;
      const value = this.free[i * dimensions + dimension] ?? -1;
      if (value < best || (value === best && this.leftmostLeaf(i) >= bestLeaf)) continue;
      if (i >= this.width) {
        const slot = this.slots[i - this.width] ?? -1;
        if (slot >= 0 && accept(slot)) {
          best = value;
          bestLeaf = i - this.width;
          bestSlot = slot;
        }
        continue;
      }
      const left = 2 * i;
      const right = left + 1;
      // Explore the larger side first so the bound tightens early; on ties the left side wins.
      if (
        (this.free[right * dimensions + dimension] ?? -1) > (this.free[left * dimensions + dimension] ?? -1)
      ) {
        stack[top++] = left;
        stack[top++] = right;
      } else {
        stack[top++] = right;
        stack[top++] = left;
      }
    }
    return bestSlot;
  }

  /**
   * The accepted node whose capacity fits `request` and whose free is nearest to fitting it (least
   * `shortfall`, first in leaf order on ties), or -1.
   */
  nearest(request: Vector, accept: (slot: number) => boolean): number {
    return this.nearestFew(request, 1, accept)[0]?.slot ?? -1;
  }

  /**
   * The `count` nearest such nodes, nearest first; fewer when fewer qualify. The bound per subtree uses
   * its largest free and largest capacity, which can only make the shortfall smaller, so pruning never
   * loses one of the best.
   */
  nearestFew(request: Vector, count: number, accept: (slot: number) => boolean): Near[] {
    const best: Near[] = [];
    if (this.size === 0 || count <= 0) return best;
    this.refresh();
    const stack = this.stack;
    let top = 0;
    stack[top++] = 1;
    while (top > 0) {
      const i = stack[--top] ?? 1;
      const bound = this.bound(i, request);
      if (bound === Infinity) continue;
      const worst = best.length === count ? best[count - 1] : undefined;
      if (worst && (bound > worst.value || (bound === worst.value && this.leftmostLeaf(i) >= worst.leaf)))
        continue;
      if (i >= this.width) {
        const slot = this.slots[i - this.width] ?? -1;
        if (slot < 0 || !accept(slot)) continue;
        const near: Near = { slot, value: bound, leaf: i - this.width };
        let at = best.length;
        while (at > 0 && isBefore(near, best[at - 1])) at--;
        best.splice(at, 0, near);
        if (best.length > count) best.pop();
        continue;
      }
      const left = 2 * i;
      const right = left + 1;
      if (this.bound(right, request) < this.bound(left, request)) {
        stack[top++] = left;
        stack[top++] = right;
      } else {
        stack[top++] = right;
        stack[top++] = left;
      }
    }
    return best;
  }

  /** Lower bound of the shortfall below vertex `i`; Infinity when no capacity there fits. */
  private bound(i: number, request: Vector): number {
    if (!this.fitsAt(this.capacity, i, request)) return Infinity;
    const at = i * this.dimensions;
    let total = 0;
    for (let d = 0; d < this.dimensions; d++) {
      const need = request[d] ?? 0;
      if (need <= 0) continue;
      const missing = need - (this.free[at + d] ?? -1);
      if (missing > 0) total += missing / (this.capacity[at + d] ?? 0);
    }
    return total;
  }

  /** Some node below vertex i may have `request` free: every dimension, and CPU with memory jointly. */
  private freeFits(i: number, request: Vector, step: number): boolean {
    if (step >= 0 && (this.joint[i * steps + step] ?? -1) < (request[memoryDimension] ?? 0)) return false;
    return this.fitsAt(this.free, i, request);
  }

  private fitsAt(values: Float64Array, i: number, request: Vector): boolean {
    const at = i * this.dimensions;
    for (let d = 0; d < this.dimensions; d++) if ((values[at + d] ?? -1) < (request[d] ?? 0)) return false;
    return true;
  }

  private leftmostLeaf(i: number): number {
    let vertex = i;
    while (vertex < this.width) vertex *= 2;
    return vertex - this.width;
  }
}
