/**
 * The events this node keeps for `GET /v1/events`: a bounded ring of what the applied log derived
 * (cluster/events.ts) and the leaders it saw, in index order, and the streams that read it. A stream is
 * a cursor into the ring, so a slow reader holds no copy of anything: one that falls so far behind that
 * its next event has left the ring gets an error line and is ended (it may resume by index, and is then
 * told what it missed). Nothing here is replicated; a node that restarts rebuilds its ring from the log
 * it replays, back to its last snapshot.
 */
import type { EventFrame } from '../api/index.ts';
import { eventMatches, type ClusterEvent, type EventFilter } from '../cluster/index.ts';
import { assert } from '../shared/assert.ts';
import { ShoalError } from '../shared/errors.ts';

/**
 * Events one node keeps in memory. An event is ~300 bytes as JSON (a task event with its names), so ~3 MiB
 * at the cap: a submission of replicasMax tasks (10,000) fits whole.
 */
export const eventsRetainedMax = 10_000;
/** Event streams one node serves at once; beyond it a new one is refused (UNAVAILABLE) until one ends. */
export const eventStreamsMax = 256;
/** A stream that has sent nothing for this long sends a heartbeat, so an idle connection is not cut. */
export const eventsHeartbeatIntervalMs = 10_000;

/** What the ring holds: events, and marks where the history before them was lost (a snapshot installed). */
type Item = ClusterEvent | { readonly type: 'reset'; readonly index: number };

/**
 * The ring itself, pure: events in non-decreasing index order, at most `retainedMax`, each with a sequence
 * number that never repeats (what a reader's cursor holds).
 */
export class EventRing {
  private readonly retainedMax: number;
  private items: Item[] = [];
  /** Items before this position in `items` have left the ring (removed in batches). */
  private head = 0;
  /** The sequence number of items[head]. */
  private headSeq = 0;
  /** Every event with an index above this is in the ring; some at or below it may be gone. */
  private completeAfterIndex = 0;
  private appliedIndex = 0;

  constructor(retainedMax: number) {
    assert(retainedMax > 0, 'the ring holds at least one event');
    this.retainedMax = retainedMax;
  }

  /** The last index the ring has been told of: events up to it are all in (or were, once). */
  get lastIndex(): number {
    return this.appliedIndex;
  }

  /** The sequence number of the oldest item held. */
  get startSeq(): number {
    return this.headSeq;
  }

  /** The sequence number the next item will get. */
  get endSeq(): number {
    return this.headSeq + this.items.length - this.head;
  }

  /** Adds the events of one applied entry (none is fine: the index still advances). */
  append(index: number, events: readonly ClusterEvent[]): void {
    assert(index >= this.appliedIndex, 'events arrive in index order');
    this.appliedIndex = index;
    for (const event of events) {
      assert(event.index === index, 'an event carries the index it is appended at');
      this.push(event);
    }
  }

  /** The history up to `index` is lost (the state was replaced by a snapshot): readers get a reset. */
  reset(index: number): void {
    this.appliedIndex = Math.max(this.appliedIndex, index);
    this.completeAfterIndex = Math.max(this.completeAfterIndex, index);
    this.push({ type: 'reset', index });
  }

  /** The item with this sequence number; undefined when it has left the ring or is not there yet. */
  at(seq: number): Item | undefined {
    if (seq < this.headSeq || seq >= this.endSeq) return undefined;
    return this.items[this.head + seq - this.headSeq];
  }

  /**
   * Where a reader who has every event up to `index` starts: at the first event after it, or after a reset
   * when some it needs are gone. Null: from now on.
   */
  start(index: number | null): { readonly seq: number; readonly reset: number | null } {
    if (index === null) return { seq: this.endSeq, reset: null };
    const reset = index < this.completeAfterIndex ? this.completeAfterIndex : null;
    const after = reset ?? index;
    // The first item with an index above `after` (indexes never decrease along the ring).
    let low = this.headSeq;
    let high = this.endSeq;
    while (low < high) {
      const middle = Math.floor((low + high) / 2);
      if ((this.at(middle)?.index ?? Infinity) > after) high = middle;
      else low = middle + 1;
    }
    return { seq: low, reset };
  }

  private push(item: Item): void {
    this.items.push(item);
    if (this.items.length - this.head > this.retainedMax) {
      const dropped = this.items[this.head];
      this.head++;
      this.headSeq++;
      if (dropped) this.completeAfterIndex = Math.max(this.completeAfterIndex, dropped.index);
    }
    // Drop the departed part now and then, not on every push.
    if (this.head >= this.retainedMax) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}

export interface EventHubInit {
  readonly retainedMax?: number;
  readonly streamsMax?: number;
  readonly heartbeatIntervalMs?: number;
}

/** The ring, fed by the node as it applies the log, and the streams reading it. */
export class EventHub {
  private readonly ring: EventRing;
  private readonly streamsMax: number;
  private readonly heartbeatIntervalMs: number;
  /** Streams waiting for something new. */
  private readonly waiting = new Set<() => void>();
  private streams = 0;
  private closed = false;

  constructor(init: EventHubInit = {}) {
    this.ring = new EventRing(init.retainedMax ?? eventsRetainedMax);
    this.streamsMax = init.streamsMax ?? eventStreamsMax;
    this.heartbeatIntervalMs = init.heartbeatIntervalMs ?? eventsHeartbeatIntervalMs;
  }

  get lastIndex(): number {
    return this.ring.lastIndex;
  }

  /** Streams open now. */
  get openStreams(): number {
    return this.streams;
  }

  /** The events of one applied entry (or an observed leader, at the last applied index). */
  append(index: number, events: readonly ClusterEvent[]): void {
    this.ring.append(index, events);
    if (events.length > 0) this.wake();
  }

  /** The state was replaced by a snapshot at `index`: what happened before it is not in the ring. */
  restored(index: number): void {
    this.ring.reset(index);
    this.wake();
  }

  /** Ends every stream (the node stops). */
  close(): void {
    this.closed = true;
    this.wake();
  }

  /**
   * A stream of every event after `index` (null: from now on) that matches `filter`: first those the ring
   * holds, then a heartbeat, then new ones as they are appended, until `signal` aborts. Throws UNAVAILABLE
   * at once when eventStreamsMax streams are open.
   */
  open(index: number | null, filter: EventFilter, signal: AbortSignal): AsyncIterable<EventFrame> {
    if (this.closed) throw new ShoalError('UNAVAILABLE', 'this node is stopping');
    if (this.streams >= this.streamsMax) {
      throw new ShoalError(
        'UNAVAILABLE',
        `this node serves ${this.streamsMax} event streams already; retry later, or ask another node`,
      );
    }
    this.streams++;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.streams--;
    };
    // Counted until it ends, or its reader goes away even if it never read.
    signal.addEventListener('abort', release, { once: true });
    return this.follow(this.ring.start(index), index, filter, signal, release);
  }

  private async *follow(
    start: { readonly seq: number; readonly reset: number | null },
    index: number | null,
    filter: EventFilter,
    signal: AbortSignal,
    release: () => void,
  ): AsyncGenerator<EventFrame, void, undefined> {
    try {
      let seq = start.seq;
      // A reader from a node further ahead than this one gets only what comes after its index.
      const after = start.reset ?? index ?? -1;
      if (start.reset !== null) yield { type: 'reset', index: start.reset };
      let caughtUp = false;
      let quietSinceMs = Date.now();
      while (!signal.aborted && !this.closed) {
        if (seq < this.ring.startSeq) {
          yield {
            type: 'error',
            error: {
              code: 'UNAVAILABLE',
              message: `the reader of this stream fell more than ${this.ring.endSeq - this.ring.startSeq} events behind; open it again from the last index read in full`,
            },
          };
          return;
        }
        const item = this.ring.at(seq);
        if (item !== undefined) {
          seq++;
          if (item.index <= after || (item.type !== 'reset' && !eventMatches(item, filter))) continue;
          quietSinceMs = Date.now();
          yield item;
          continue;
        }
        const quietMs = Date.now() - quietSinceMs;
        if (!caughtUp || quietMs >= this.heartbeatIntervalMs) {
          caughtUp = true;
          quietSinceMs = Date.now();
          yield { type: 'heartbeat', index: this.ring.lastIndex };
          continue;
        }
        await this.changed(this.heartbeatIntervalMs - quietMs, signal);
      }
    } finally {
      release();
    }
  }

  /** Resolves when something is appended, `waitMs` passes, or `signal` aborts. */
  private changed(waitMs: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiting.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, waitMs);
      this.waiting.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  private wake(): void {
    for (const done of [...this.waiting]) done();
  }
}
