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

export const restartPolicies = ['never', 'on-failure', 'always'] as const;
export type RestartPolicy = (typeof restartPolicies)[number];
/** The longest wait between two restarts, however many failures came before. */
export const restartDelayMsMax = 5 * 60_000;

export const restartSchema = z
  .object({
    policy: z.enum(restartPolicies),
    /** Restarts allowed after the first run; null means no limit (for `always`). */
    maxRestarts: z.number().int().min(0).max(1_000_000).nullable(),
    /** Delay before the first restart; it doubles with each restart, up to restartDelayMsMax. */
    delayMs: z.number().int().min(0).max(restartDelayMsMax),
  })
  .strict();

export type RestartSpec = z.infer<typeof restartSchema>;

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
    /** What to do when the task ends; absent means never restart. */
    restart: restartSchema.optional(),
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
  /** run; kill (stop for good); move (stop here, then queue again: the node is being drained). */
  desired: 'run' | 'kill' | 'move';
  state: TaskState;
  /** The node (peer id) the task is assigned to, once placed. */
  nodeId: string | null;
  /** The leader term that assigned it; agents ignore assignments from older terms. */
  assignedTerm: number | null;
  /** Which run this is: 0 for the first, +1 for every restart. Reports name the attempt they are about. */
  attempt: number;
  /** A restarted task is not placed before this time (its backoff). */
  notBeforeMs: number | null;
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

/** Whether a task that ended in `state` runs again under its policy, after how long, and why. */
export function restartDecision(
  spec: TaskSpec,
  attempt: number,
  state: TaskState,
): { restart: false } | { restart: true; delayMs: number } {
  const restart = spec.restart;
  if (!restart || restart.policy === 'never' || state === 'killed') return { restart: false };
  if (restart.policy === 'on-failure' && state === 'finished') return { restart: false };
  if (restart.maxRestarts !== null && attempt >= restart.maxRestarts) return { restart: false };
  const delayMs = Math.min(restartDelayMsMax, restart.delayMs * 2 ** Math.min(attempt, 20));
  return { restart: true, delayMs };
}
