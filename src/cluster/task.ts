/**
 * The task model as users and the replicated state see it. Pure data and validation; no I/O.
 */
import { z } from 'zod';

export const taskDrivers = ['exec', 'docker'] as const;
export type TaskDriver = (typeof taskDrivers)[number];

/** Observed states, after Mesos. The first four are live; the last four are terminal. */
export const taskStates = [
  'pending',
  'assigned',
  'starting',
  'running',
  'finished',
  'failed',
  'killed',
  'lost',
] as const;
export type TaskState = (typeof taskStates)[number];

export const terminalTaskStates: ReadonlySet<TaskState> = new Set(['finished', 'failed', 'killed', 'lost']);

export function isTerminal(state: TaskState): boolean {
  return terminalTaskStates.has(state);
}

/** What the user asked for. The log stores it as submitted. */
export const priorityMin = 0;
export const priorityMax = 100;
export const priorityDefault = 50;
export const taskNameLengthMax = 128;
export const commandArgumentsMax = 256;
export const commandBytesMax = 64 * 1024;
export const envEntriesMax = 256;

export const taskSpecSchema = z
  .object({
    name: z
      .string()
      .min(1)
      .max(taskNameLengthMax)
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'name may hold letters, digits, ".", "_" and "-"'),
    driver: z.enum(taskDrivers),
    command: z.array(z.string().max(commandBytesMax)).max(commandArgumentsMax),
    image: z.string().min(1).max(1024).optional(),
    cpuMillis: z.number().int().min(1, 'cpu must be positive').max(1_000_000),
    memoryBytes: z
      .number()
      .int()
      .min(1024 * 1024, 'memory must be at least 1 MiB')
      .max(2 ** 50),
    priority: z.number().int().min(priorityMin).max(priorityMax),
    env: z
      .record(
        z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'env names are letters, digits and "_"'),
        z.string(),
      )
      .refine((env) => Object.keys(env).length <= envEntriesMax, `at most ${envEntriesMax} env entries`),
    constraints: z.record(z.string().min(1).max(128), z.string().max(256)),
  })
  .strict()
  .superRefine((spec, ctx) => {
    if (spec.driver === 'exec' && spec.command.length === 0) {
      ctx.addIssue({ code: 'custom', message: 'the exec driver needs a command (shoal run -- CMD ARGS…)' });
    }
    if (spec.driver === 'docker' && spec.image === undefined) {
      ctx.addIssue({ code: 'custom', message: 'the docker driver needs an image (--image NAME)' });
    }
    if (spec.driver === 'exec' && spec.image !== undefined) {
      ctx.addIssue({
        code: 'custom',
        message: '--image is only for the docker driver (add --driver docker)',
      });
    }
  });

export type TaskSpec = z.infer<typeof taskSpecSchema>;

/** A task as the replicated state holds it. `desired` is what should be; `state` is what was observed. */
export interface Task {
  readonly id: string;
  readonly spec: TaskSpec;
  /** Log index of the submission: the FIFO order among equal priorities. */
  readonly submitIndex: number;
  readonly submittedAtMs: number;
  desired: 'run' | 'kill';
  state: TaskState;
  /** The node (peer id) the task is assigned to, once placed. */
  nodeId: string | null;
  /** The leader term that assigned it; agents ignore assignments from older terms. */
  assignedTerm: number | null;
  exitCode: number | null;
  /** Why the task is in its state: a terminal reason, or why it still waits. */
  reason: string | null;
  updatedAtMs: number;
}

/** Turns zod's issues into one line a user can act on. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => (issue.path.length > 0 ? `${issue.path.join('.')}: ${issue.message}` : issue.message))
    .join('; ');
}
