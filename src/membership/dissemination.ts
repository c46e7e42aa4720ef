/**
 * The queue of updates waiting to be piggybacked or gossiped (memberlist's TransmitLimitedQueue). One
 * item per member: a newer update about a member replaces the queued one. Each take prefers the items
 * sent least often, newest first, and an item is dropped once sent `limit` times (λ·log N), which is
 * what keeps the load per member constant as the cluster grows.
 */
import type { Update } from './messages.ts';

interface Item {
  readonly subject: string;
  readonly update: Update;
  readonly bytes: number;
  readonly order: number;
  transmits: number;
}

export class BroadcastQueue {
  private readonly items = new Map<string, Item>();
  private order = 0;

  get size(): number {
    return this.items.size;
  }

  /** Queues `update` about `subject`, replacing whatever was queued about it. */
  enqueue(subject: string, update: Update): void {
    const bytes = Buffer.byteLength(JSON.stringify(update));
    this.items.set(subject, { subject, update, bytes, order: this.order++, transmits: 0 });
  }

  /** Whether an update about `subject` is waiting (for tests and for the urgent gossip decision). */
  has(subject: string): boolean {
    return this.items.has(subject);
  }

  /** Forgets what is queued about `subject` (a member reaped). */
  drop(subject: string): void {
    this.items.delete(subject);
  }

  /**
   * Takes up to `countMax` updates within `bytesMax`, counting each as sent once more; items sent
   * `limit` times are removed. `skip` names subjects the caller adds by itself.
   */
  take(countMax: number, bytesMax: number, limit: number, skip?: ReadonlySet<string>): Update[] {
    if (this.items.size === 0 || countMax <= 0) return [];
    const candidates = [...this.items.values()].sort(
      (a, b) => a.transmits - b.transmits || b.order - a.order,
    );
    const taken: Update[] = [];
    let bytes = 0;
    for (const item of candidates) {
      if (taken.length >= countMax) break;
      if (skip?.has(item.subject) === true) continue;
      if (bytes + item.bytes > bytesMax) continue;
      bytes += item.bytes;
      taken.push(item.update);
      item.transmits++;
      if (item.transmits >= limit) this.items.delete(item.subject);
    }
    return taken;
  }
}
