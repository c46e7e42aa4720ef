/**
 * What one submission becomes in the log: the task-id scheme, the replica bound and the job a group of
 * replicas forms. Pure: the caller brings the first id (random, or the client's, so a retry is idempotent).
 */
import { createHash, randomBytes } from 'node:crypto';
import { taskNameLengthMax, type TaskSpec } from './task.ts';

/** Task ids: 12 lowercase hex digits. */
export const taskIdPattern = /^[0-9a-f]{12}$/;
/** Most replicas one submission may create. */
export const replicasMax = 10_000;

export interface SubmitOptions {
  /** How many tasks of this spec to create, as one job (default 1). */
  readonly replicas: number;
  /** The replicas start together or not at all. */
  readonly gang: boolean;
  /** The (first) task's id, chosen by the client so it can retry safely; default random. */
  readonly id?: string;
}

/** A fresh task id (48 random bits). */
export function newTaskId(): string {
  return randomBytes(6).toString('hex');
}

/** The job replicas form unless the spec names one: the task's name. */
export function defaultJobName(spec: Pick<TaskSpec, 'name' | 'job'>): string {
  return spec.job ?? spec.name;
}

/**
 * The tasks one submission creates. One task keeps its spec; replicas form one job (see defaultJobName),
 * are named NAME-0…NAME-(N-1), and take ids derived from the first, so a retried submission names the same
 * tasks. A gang is one group too: the allocator starts all of its tasks or none.
 */
export function expandSubmission(
  spec: TaskSpec,
  options: SubmitOptions,
  firstId: string,
): { readonly id: string; readonly spec: TaskSpec }[] {
  if (options.replicas <= 1 && !options.gang) return [{ id: firstId, spec }];
  const job = defaultJobName(spec);
  const digits = String(options.replicas - 1).length;
  return Array.from({ length: options.replicas }, (_, index) => {
    const id =
      index === 0 ? firstId : createHash('sha256').update(`${firstId}/${index}`).digest('hex').slice(0, 12);
    return {
      id,
      spec: {
        ...spec,
        name: `${spec.name.slice(0, taskNameLengthMax - digits - 1)}-${index}`,
        job,
        ...(options.gang ? { group: `gang-${firstId}` } : {}),
      },
    };
  });
}
