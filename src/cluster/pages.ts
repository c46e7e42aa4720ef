/**
 * Pages of the task list (GET /v1/tasks?limit=&after=): a cluster of hundreds of thousands of tasks is read
 * a page at a time, so that no one answer holds a node's event loop for seconds. The order is submission
 * order, made total: the log index of the submission, then the task's id (one entry may submit a thousand
 * tasks). A cursor names the last task of the page before; a task submitted since lands in a later page,
 * and one forgotten since is simply not there: no task is listed twice, none that lived throughout is
 * skipped.
 */
import type { Task } from './task.ts';

type Ordered = Pick<Task, 'submitIndex' | 'id'>;

/** The cursor after `task`: what the shoal-next-page header carries. */
export function taskPageCursor(task: Ordered): string {
  return `${task.submitIndex}.${task.id}`;
}

/** The position a cursor names, or null when it is no cursor. */
export function parseTaskPageCursor(cursor: string): Ordered | null {
  const dot = cursor.indexOf('.');
  if (dot <= 0) return null;
  const submitIndex = Number(cursor.slice(0, dot));
  const id = cursor.slice(dot + 1);
  if (!Number.isSafeInteger(submitIndex) || submitIndex < 0 || id === '') return null;
  return { submitIndex, id };
}

/** Submission order: the submission's log index, then the id. */
export function compareSubmission(a: Ordered, b: Ordered): number {
  return a.submitIndex - b.submitIndex || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/**
 * The tasks after `after` (null: from the first) in submission order, at most `limit` of them (null: all),
 * and the cursor of the next page (null when none is left). O(n) to pick, and a sort that is short work on
 * tasks held in about the order they were submitted, as the state holds them.
 */
export function pageOfTasks<T extends Ordered>(
  tasks: Iterable<T>,
  limit: number | null,
  after: Ordered | null,
): { readonly tasks: T[]; readonly next: string | null } {
  const picked: T[] = [];
  for (const task of tasks) if (after === null || compareSubmission(task, after) > 0) picked.push(task);
  picked.sort(compareSubmission);
  if (limit === null || picked.length <= limit) return { tasks: picked, next: null };
  const page = picked.slice(0, limit);
  const last = page[page.length - 1];
  return { tasks: page, next: last === undefined ? null : taskPageCursor(last) };
}
