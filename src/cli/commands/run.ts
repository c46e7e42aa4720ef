/**
 * `shoal run`: submits a task (or replicas) and, unless detached, shows the task's events until it runs or
 * ends. For scripts, stdout holds exactly the new task ids, one per line, when it is not a terminal.
 */
import type { ShoalClient, SubmitAnswer, TaskDetailView } from '../../api/index.ts';
import {
  defaultJobName,
  isTerminal,
  jobFromTaskSpec,
  newTaskId,
  type TaskSpec,
} from '../../cluster/index.ts';
import { ShoalError, invalidArgument } from '../../shared/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { apiFlags } from '../flags.ts';
import { formatJson } from '../format.ts';
import { jobToYaml } from '../job-file.ts';
import { buildSpec, labelRuleNote, replicaCount, taskSpecFlags } from '../spec.ts';

/** How long `shoal run` keeps resending a submission that no leader confirmed (same id, so safe). */
const submitRetryMs = 30_000;
const submitRetryIntervalMs = 500;
/** How often `shoal run` looks at its task while the event stream is down (and tries the stream again). */
const runPollIntervalMs = 250;
/** `shoal run` gives up watching (the task goes on) after the API has failed this long in a row. */
const runUnreachableMsMax = 30_000;
/** Failures a new leader clears up: the submission is sent again with the same id. */
const retryableCodes: ReadonlySet<string> = new Set(['NO_LEADER', 'NOT_LEADER', 'TIMEOUT']);

const options = {
  ...taskSpecFlags,
  gang: { type: 'boolean', help: 'start the replicas together or not at all (needs --replicas 2 or more)' },
  detach: { type: 'boolean', short: 'd', help: 'print the id(s) and return without watching the task start' },
  quiet: {
    type: 'boolean',
    short: 'q',
    help: 'print only the id(s), one per line, and return (no progress, no watching)',
  },
  'dry-run': { type: 'boolean', help: 'submit nothing: print the job file this run would be (with -o)' },
  output: {
    type: 'string',
    short: 'o',
    value: 'yaml|json',
    help: '--dry-run: the job file format (default yaml)',
  },
  ...apiFlags,
} as const;

export const runCommand: Command = defineCommand({
  name: 'run',
  summary: 'submit a task (or replicas) and watch it start',
  synopsis: [
    'shoal run [flags] -- CMD ARGS...',
    'shoal run --driver docker --image IMAGE [flags] [-- CMD ARGS...]',
    'shoal run --image IMAGE [flags] [-- CMD ARGS...]   (exec: no engine; the image runs in its own root)',
  ],
  description:
    'Submits a task; it is placed once a quorum of the cluster has committed it. The new task id goes to\n' +
    "stdout. Without --detach, the task's events follow until it runs or ends; the exit code says whether it\n" +
    'started (0: running or finished; 1: failed, killed or lost). Several replicas are not watched: follow\n' +
    'them with shoal ps.',
  options,
  allowPositionals: true,
  notes: labelRuleNote,
  run: async ({ values, positionals }) => {
    const spec = buildSpec(values, positionals);
    const replicas = replicaCount(values);
    if (values.gang && replicas < 2) throw invalidArgument('--gang needs --replicas 2 or more');
    if (values.output !== undefined && !values['dry-run']) throw invalidArgument('-o goes with --dry-run');
    if (values['dry-run']) {
      const output = values.output ?? 'yaml';
      if (output !== 'yaml' && output !== 'json') throw invalidArgument('-o must be yaml or json');
      const { job, omitted } = jobFromTaskSpec(spec, replicas, values.gang);
      process.stdout.write(output === 'yaml' ? jobToYaml(job) : formatJson(job));
      if (omitted.length > 0)
        process.stderr.write(`shoal run: a job file has no ${omitted.join(', ')}; left out\n`);
      return Promise.resolve(0);
    }
    const quiet = values.quiet;
    const progress = (text: string): void => {
      if (!quiet) process.stderr.write(text);
    };
    return withClient(values, async (client) => {
      progress(`submitting ${spec.name} to ${client.address}…\n`);
      const answer = await submit(client, spec, { replicas, gang: values.gang }, progress);
      const announced = announceSubmission({
        ids: answer.ids.length === 0 ? [answer.id] : answer.ids,
        job: defaultJobName(spec),
        // Typed boolean, but undefined when stdout is not a terminal: falsy either way.
        terminal: process.stdout.isTTY,
        quiet,
      });
      process.stdout.write(announced.stdout);
      process.stderr.write(announced.stderr);
      if (quiet || values.detach || answer.ids.length > 1) return 0;
      return watchStart(client, answer.id);
    });
  },
});

/**
 * Sends the submission until a leader commits it. The id is chosen here, so a submission whose outcome was
 * not heard (a failover, a timeout) can be sent again: the log accepts an id once.
 */
async function submit(
  client: ShoalClient,
  spec: TaskSpec,
  options: { readonly replicas: number; readonly gang: boolean },
  progress: (text: string) => void,
): Promise<SubmitAnswer> {
  const taskId = newTaskId();
  const deadlineMs = Date.now() + submitRetryMs;
  for (;;) {
    try {
      return await client.submit(spec, { id: taskId, ...options });
    } catch (error) {
      const retryable = error instanceof ShoalError && retryableCodes.has(error.code);
      if (!retryable || Date.now() >= deadlineMs) {
        if (error instanceof ShoalError && error.code === 'TIMEOUT')
          throw new ShoalError('TIMEOUT', `${error.message}; check with shoal ps for task ${taskId}`);
        throw error;
      }
      progress(`${error.message.split(';')[0] ?? ''}; sending task ${taskId} again…\n`);
      await sleep(submitRetryIntervalMs);
    }
  }
}

/**
 * What `shoal run` prints once the task is committed. A terminal gets one clear line on stdout; anything
 * else (a script, a pipe) gets exactly the ids on stdout, and the progress line on stderr. --quiet: the
 * ids alone, wherever stdout goes.
 */
export function announceSubmission(submitted: {
  readonly ids: readonly string[];
  readonly job: string;
  readonly terminal: boolean;
  readonly quiet: boolean;
}): { readonly stdout: string; readonly stderr: string } {
  const { ids, job } = submitted;
  const bare = ids.map((id) => `${id}\n`).join('');
  if (submitted.quiet) return { stdout: bare, stderr: '' };
  if (submitted.terminal) {
    return {
      stdout:
        ids.length === 1
          ? `task ${ids[0] ?? ''} committed by a quorum\n`
          : `${ids.length} tasks of job ${job} committed by a quorum:\n${bare}`,
      stderr: '',
    };
  }
  return {
    stdout: bare,
    stderr:
      ids.length === 1
        ? `committed by a quorum: task ${ids[0] ?? ''}\n`
        : `committed by a quorum: ${ids.length} tasks of job ${job}\n`,
  };
}

/**
 * Prints a task's events as they appear until it runs or ends, then its state. The exit code says whether it
 * started: 0 when running or finished, 1 when it failed, was killed or was lost. Ctrl-C stops watching only.
 * The task is read again whenever the event stream says it changed.
 */
async function watchStart(client: ShoalClient, taskId: string): Promise<number> {
  const printed = new Set<string>();
  const changes = taskChanges(client, taskId);
  try {
    for (;;) {
      await changes.next();
      const task = await readTask(client, taskId);
      for (const event of task.events) {
        const key = `${event.at} ${event.message}`;
        if (printed.has(key)) continue;
        printed.add(key);
        process.stderr.write(`  ${event.at.slice(11, 23)}  ${event.message}\n`);
      }
      if (task.state === 'running') {
        process.stderr.write(`task ${taskId} is running on ${task.node ?? 'a node'}\n`);
        return 0;
      }
      if (isTerminal(task.state)) {
        const exit =
          task.exitCode === null || task.reason?.includes('exit code') === true
            ? ''
            : `, exit code ${task.exitCode}`;
        const reason = task.reason === null ? '' : `: ${task.reason}`;
        process.stderr.write(`task ${taskId} ${task.state}${reason}${exit}\n`);
        return task.state === 'finished' ? 0 : 1;
      }
    }
  } finally {
    // Closes the event stream.
    await changes.return();
  }
}

/**
 * Yields whenever the task may have changed: once its event stream is open (again after each reopening, as
 * events may have been missed meanwhile), then on each of its events, and on a reset. While the stream
 * cannot be had (its node restarts, it broke off, an agent without it), yields every runPollIntervalMs
 * instead (polling), and tries the stream again, from the last index it read.
 */
async function* taskChanges(client: ShoalClient, taskId: string): AsyncGenerator<void, void, undefined> {
  let index: number | undefined;
  let streams = true;
  for (;;) {
    if (streams) {
      try {
        let opened = false;
        for await (const frame of client.events({
          task: taskId,
          ...(index === undefined ? {} : { index }),
        })) {
          if (frame.type === 'error') break;
          index = frame.index;
          if (!opened || frame.type !== 'heartbeat') yield;
          opened = true;
        }
      } catch (error) {
        // An agent of a version without the event stream: polling it is.
        if (error instanceof ShoalError && error.code === 'NOT_FOUND') streams = false;
      }
    }
    await sleep(runPollIntervalMs);
    yield;
  }
}

/**
 * The task, read until an answer comes: a leader change makes reads fail for a moment, so only an API that
 * has failed for runUnreachableMsMax in a row ends the watch (the task goes on).
 */
async function readTask(client: ShoalClient, taskId: string): Promise<TaskDetailView> {
  const failingSinceMs = Date.now();
  for (;;) {
    try {
      return await client.task(taskId);
    } catch (error) {
      if (Date.now() - failingSinceMs > runUnreachableMsMax) throw error;
      await sleep(runPollIntervalMs);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
