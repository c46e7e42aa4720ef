/**
 * A binary min-heap of queues by their head task (submission order, then id): within one namespace at one
 * priority, the allocator takes the next task from the queue whose head came first. In: queues (records.ts)
 * whose heads move only forward. Out: the queue with the earliest head, in O(log n) per change.
 */
import { headOf, type Queue } from './records.ts';

/** A binary min-heap of queues by their head task (submission order, then id). */
export class QueueHeap {
  private readonly items: Queue[] = [];

  clear(): void {
    this.items.length = 0;
  }

  get size(): number {
    return this.items.length;
  }

  peek(): Queue | undefined {
    return this.items[0];
  }

  push(queue: Queue): void {
    this.items.push(queue);
    let i = this.items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): void {
    const last = this.items.pop();
    if (last === undefined || this.items.length === 0) return;
    this.items[0] = last;
    this.siftDown(0);
  }

  /** The top queue's head moved on. */
  headChanged(): void {
    this.siftDown(0);
  }

  private siftDown(start: number): void {
    let i = start;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < this.items.length && this.less(left, smallest)) smallest = left;
      if (right < this.items.length && this.less(right, smallest)) smallest = right;
      if (smallest === i) return;
      this.swap(i, smallest);
      i = smallest;
    }
  }

  private less(i: number, j: number): boolean {
    const a = headOf(this.items[i]);
    const b = headOf(this.items[j]);
    if (!a || !b) return a !== undefined;
    return a.submitIndex - b.submitIndex < 0 || (a.submitIndex === b.submitIndex && a.id < b.id);
  }

  private swap(i: number, j: number): void {
    const a = this.items[i];
    const b = this.items[j];
    if (a === undefined || b === undefined) return;
    this.items[i] = b;
    this.items[j] = a;
  }
}
