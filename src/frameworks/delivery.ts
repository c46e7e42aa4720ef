/**
 * When to (re)send status updates, on the leader. The registry keeps every unacknowledged update durably;
 * this decides which go out now: for each task only its oldest unacknowledged update (so a framework sees a
 * task's states in order, as Mesos's status update manager sends them), first at once, then again after
 * updateRetryMsInitial, doubling to updateRetryMsMax, until the ACKNOWLEDGE commits. Volatile: a new leader
 * or a new subscription sends everything pending at once.
 *
 * In: a framework's pending updates (from the registry) and `nowMs`. Out: UPDATE events. Keeps only send
 * times; never touches the registry, streams or the clock.
 */
import { assert } from '../shared/assert.ts';
import { updateRetryMsInitial, updateRetryMsMax } from './limits.ts';
import type { SchedulerEvent, StatusUpdate } from './types.ts';

export interface UpdateDeliveryInit {
  /** Default updateRetryMsInitial (10 s). */
  readonly retryMsInitial?: number;
  /** Default updateRetryMsMax (10 min). */
  readonly retryMsMax?: number;
}

interface Attempt {
  nextAtMs: number;
  intervalMs: number;
}

export class UpdateDelivery {
  private readonly retryMsInitial: number;
  private readonly retryMsMax: number;
  /** Framework id → update uuid → its next send. */
  private readonly attempts = new Map<string, Map<string, Attempt>>();

  constructor(init: UpdateDeliveryInit = {}) {
    this.retryMsInitial = init.retryMsInitial ?? updateRetryMsInitial;
    this.retryMsMax = init.retryMsMax ?? updateRetryMsMax;
    assert(
      Number.isSafeInteger(this.retryMsInitial) &&
        this.retryMsInitial > 0 &&
        this.retryMsMax >= this.retryMsInitial,
      'retry intervals are whole ms, 0 < initial ≤ max',
    );
  }

  /** A (re)subscription: everything pending goes out on the next `due`. */
  reset(frameworkId: string): void {
    this.attempts.delete(frameworkId);
  }

  /** The framework is gone from this leader (disconnected, torn down, expired). */
  forget(frameworkId: string): void {
    this.attempts.delete(frameworkId);
  }

  /** UPDATE events to send now: each task's oldest pending update, if never sent or its retry is due. */
  due(frameworkId: string, pending: readonly StatusUpdate[], nowMs: number): SchedulerEvent[] {
    const previous = this.attempts.get(frameworkId) ?? new Map<string, Attempt>();
    const current = new Map<string, Attempt>();
    const heads = new Set<string>();
    const events: SchedulerEvent[] = [];
    for (const update of pending) {
      if (heads.has(update.taskId)) continue;
      heads.add(update.taskId);
      const attempt = previous.get(update.uuid);
      if (attempt !== undefined && attempt.nextAtMs > nowMs) {
        current.set(update.uuid, attempt);
        continue;
      }
      const intervalMs =
        attempt === undefined ? this.retryMsInitial : Math.min(this.retryMsMax, attempt.intervalMs * 2);
      current.set(update.uuid, { nextAtMs: nowMs + intervalMs, intervalMs });
      events.push({
        type: 'UPDATE',
        frameworkId,
        taskId: update.taskId,
        status: update.status,
        uuid: update.uuid,
      });
    }
    // Acknowledged (or dropped) updates leave with the pending list; nothing else is kept.
    if (current.size === 0) this.attempts.delete(frameworkId);
    else this.attempts.set(frameworkId, current);
    return events;
  }

  /** When `due` next has something for the framework, for the shell's timer; null when nothing waits. */
  nextDueAtMs(frameworkId: string): number | null {
    let next: number | null = null;
    for (const attempt of this.attempts.get(frameworkId)?.values() ?? [])
      if (next === null || attempt.nextAtMs < next) next = attempt.nextAtMs;
    return next;
  }
}
