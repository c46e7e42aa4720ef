/** `shoal ps`, `shoal inspect` and `shoal kill`: the tasks, one task, and stopping one. */
import { invalidArgument } from '../../shared/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { apiFlags } from '../flags.ts';
import { formatJson, formatTaskDetail, formatTasks } from '../format.ts';

const jsonFlag = { json: { type: 'boolean', help: 'print the API view as JSON' } } as const;

export const psCommand: Command = defineCommand({
  name: 'ps',
  summary: 'list tasks',
  synopsis: ['shoal ps [--json]'],
  description:
    'Lists every task the cluster knows, in submission order: ID NAME STATE NODE PRIO EXIT REASON.',
  options: { ...jsonFlag, ...apiFlags },
  allowPositionals: false,
  run: ({ values }) =>
    withClient(values, async (client) => {
      const tasks = await client.tasks();
      process.stdout.write(values.json ? formatJson(tasks) : formatTasks(tasks));
      return 0;
    }),
});

export const inspectCommand: Command = defineCommand({
  name: 'inspect',
  summary: 'show a task and its recent events (pulls, starts, exits, restarts)',
  synopsis: ['shoal inspect ID [--json]'],
  description: 'Shows one task (ID from shoal ps): its state, node, limits and recent events.',
  options: { ...jsonFlag, ...apiFlags },
  allowPositionals: true,
  run: ({ values, positionals }) => {
    const taskId = onlyTaskId(positionals, 'shoal inspect ID');
    return withClient(values, async (client) => {
      const task = await client.task(taskId);
      process.stdout.write(values.json ? formatJson(task) : formatTaskDetail(task));
      return 0;
    });
  },
});

export const killCommand: Command = defineCommand({
  name: 'kill',
  summary: 'stop a task',
  synopsis: ['shoal kill ID'],
  description: 'Asks the cluster to stop a task (ID from shoal ps); it is not restarted.',
  options: { ...apiFlags },
  allowPositionals: true,
  run: ({ values, positionals }) => {
    const taskId = onlyTaskId(positionals, 'shoal kill ID');
    return withClient(values, async (client) => {
      await client.kill(taskId);
      process.stderr.write(`kill requested for task ${taskId}\n`);
      return 0;
    });
  },
});

/** The one task id a command takes. */
export function onlyTaskId(positionals: readonly string[], usage: string): string {
  const [taskId] = positionals;
  if (taskId === undefined || positionals.length > 1)
    throw invalidArgument(`usage: ${usage} (one task id, from shoal ps)`);
  return taskId;
}
