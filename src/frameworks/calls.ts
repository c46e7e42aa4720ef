/**
 * What each scheduler call comes to, decided in one place so the HTTP shell only decodes, dispatches and
 * carries out. In: a call from a subscribed framework (already decoded from Mesos's JSON: ids as strings,
 * refuse_seconds × 1000 as `refuseMs`, TaskInfos as `LaunchTask`s with the shell's own spec), the offer
 * book, the registry (read only) and `nowMs`. Out: events for the framework now, and what to propose — a
 * durable command, a launch, a kill. Mutates only the offer book (offers answered, suppression, filters).
 * SUBSCRIBE is not here: it is a durable command first (see README.md).
 */
import { FrameworkError } from './errors.ts';
import type { FrameworkCommand } from './commands.ts';
import { idLengthMax } from './limits.ts';
import type { OfferBook } from './offers.ts';
import type { FrameworkRegistry } from './registry.ts';
import type { Resources } from '../allocator/index.ts';
import type { Launch, LaunchTask, SchedulerEvent } from './types.ts';

export type SchedulerCall<Spec> =
  | {
      readonly type: 'ACCEPT';
      readonly frameworkId: string;
      readonly offerIds: readonly string[];
      readonly tasks: readonly LaunchTask<Spec>[];
      readonly refuseMs?: number;
    }
  | {
      readonly type: 'DECLINE';
      readonly frameworkId: string;
      readonly offerIds: readonly string[];
      readonly refuseMs?: number;
    }
  | { readonly type: 'REVIVE'; readonly frameworkId: string; readonly minimum?: Resources }
  | { readonly type: 'SUPPRESS'; readonly frameworkId: string }
  | { readonly type: 'KILL'; readonly frameworkId: string; readonly taskId: string }
  | {
      readonly type: 'ACKNOWLEDGE';
      readonly frameworkId: string;
      readonly taskId: string;
      readonly uuid: string;
    }
  /** No task ids: implicit reconciliation (all the framework's tasks). */
  | { readonly type: 'RECONCILE'; readonly frameworkId: string; readonly taskIds: readonly string[] }
  | { readonly type: 'TEARDOWN'; readonly frameworkId: string };

export interface CallOutcome<Spec> {
  /** Events for the calling framework's stream, to send now. */
  readonly events: readonly SchedulerEvent[];
  /** A durable command to propose (ACKNOWLEDGE, TEARDOWN). */
  readonly command: FrameworkCommand | null;
  /** ACCEPT's tasks, to propose as one replicated launch; `settle(acceptId)` once it applies or fails. */
  readonly launch: { readonly acceptId: number; readonly launches: readonly Launch<Spec>[] } | null;
  /** KILL's task, to propose as the cluster's kill. */
  readonly killClusterTaskId: string | null;
  /**
   * Why an ACCEPT launched nothing (its tasks are reported in `events` as TASK_DROPPED or TASK_ERROR). The
   * API may answer 202 as Mesos does, or this error's status.
   */
  readonly refusal: FrameworkError | null;
}

export interface CallParts {
  readonly book: OfferBook;
  readonly registry: FrameworkRegistry;
}

/**
 * The outcome of one call. Throws FrameworkError when the call is refused outright: NOT_SUBSCRIBED,
 * FRAMEWORK_UNKNOWN, CALL_INVALID, TOO_MANY_OFFERS, TOO_MANY_TASKS, TASK_INVALID.
 */
export function decideCall<Spec>(
  parts: CallParts,
  call: SchedulerCall<Spec>,
  nowMs: number,
): CallOutcome<Spec> {
  const { book, registry } = parts;
  if (!book.isSubscribed(call.frameworkId))
    throw new FrameworkError(
      'NOT_SUBSCRIBED',
      `framework ${call.frameworkId} has no subscription on this leader`,
    );
  if (!registry.has(call.frameworkId))
    throw new FrameworkError('FRAMEWORK_UNKNOWN', `framework ${call.frameworkId} is not registered`);
  const none: CallOutcome<Spec> = {
    events: [],
    command: null,
    launch: null,
    killClusterTaskId: null,
    refusal: null,
  };
  switch (call.type) {
    case 'ACCEPT': {
      const taken = (taskId: string): boolean => registry.hasTask(call.frameworkId, taskId);
      const result = book.accept(call, nowMs, taken);
      if (result.ok) return { ...none, launch: { acceptId: result.acceptId, launches: result.launches } };
      const events: SchedulerEvent[] = call.tasks.map((task) => ({
        type: 'UPDATE',
        frameworkId: call.frameworkId,
        taskId: task.taskId,
        status: { state: result.taskState, message: result.error.message, nodeId: task.nodeId, atMs: nowMs },
        uuid: null,
      }));
      return { ...none, events, refusal: result.error };
    }
    case 'DECLINE':
      book.decline(call.frameworkId, call.offerIds, call.refuseMs, nowMs);
      return none;
    case 'REVIVE':
      book.revive(call.frameworkId, call.minimum);
      return none;
    case 'SUPPRESS':
      book.suppress(call.frameworkId);
      return none;
    case 'KILL': {
      const target = registry.killTarget(call.frameworkId, call.taskId, nowMs);
      return { ...none, events: target.events, killClusterTaskId: target.clusterTaskId };
    }
    case 'ACKNOWLEDGE':
      for (const [field, value] of [
        ['task id', call.taskId],
        ['uuid', call.uuid],
      ] as const)
        if (value.length === 0 || value.length > idLengthMax)
          throw new FrameworkError(
            'CALL_INVALID',
            `an acknowledgement's ${field} is 1–${idLengthMax} characters`,
          );
      return {
        ...none,
        command: {
          type: 'acknowledgeFrameworkUpdate',
          frameworkId: call.frameworkId,
          taskId: call.taskId,
          uuid: call.uuid,
          atMs: nowMs,
        },
      };
    case 'RECONCILE':
      return { ...none, events: registry.reconcile(call.frameworkId, call.taskIds, nowMs) };
    case 'TEARDOWN':
      // Offers go at once; the record and tasks go when the command applies.
      book.unsubscribe(call.frameworkId);
      return { ...none, command: { type: 'teardownFramework', frameworkId: call.frameworkId, atMs: nowMs } };
  }
}
