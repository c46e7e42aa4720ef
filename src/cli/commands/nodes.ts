/** `shoal members`, `shoal drain` and `shoal leave`: the nodes, and taking one out of service. */
import { invalidArgument } from '../../shared/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { apiFlags } from '../flags.ts';
import { formatJson, formatMembers } from '../format.ts';

/** A leave drains the node first: its tasks must stop and start elsewhere, which takes longer than a call. */
const leaveTimeoutMs = 120_000;

export const membersCommand: Command = defineCommand({
  name: 'members',
  summary: 'list nodes',
  synopsis: ['shoal members [--json]'],
  description:
    'Lists the cluster members as the node asked sees them: NAME ADDRESS STATE CPU MEMORY DRIVERS\n' +
    'INCARNATION LAST HEARD LABELS. CPU and MEMORY are what each node offers to tasks.',
  options: { json: { type: 'boolean', help: 'print the API view as JSON' }, ...apiFlags },
  allowPositionals: false,
  run: ({ values }) =>
    withClient(values, async (client) => {
      const members = await client.members();
      process.stdout.write(values.json ? formatJson(members) : formatMembers(members));
      return 0;
    }),
});

export const drainCommand: Command = defineCommand({
  name: 'drain',
  summary: 'stop placing tasks on a node and move its tasks elsewhere',
  synopsis: ['shoal drain NODE [--cancel]'],
  description: 'Keeps new tasks off NODE (a name from shoal members) and moves its tasks to other nodes.',
  options: { cancel: { type: 'boolean', help: 'end the drain: the node takes tasks again' }, ...apiFlags },
  allowPositionals: true,
  run: ({ values, positionals }) => {
    const [node] = positionals;
    if (node === undefined || positionals.length > 1)
      throw invalidArgument('usage: shoal drain NODE [--cancel] (a name from shoal members)');
    return withClient(values, async (client) => {
      await client.drain(node, !values.cancel);
      process.stderr.write(
        values.cancel
          ? `node ${node} takes tasks again\n`
          : `node ${node} is draining: no new tasks, its tasks move elsewhere\n`,
      );
      return 0;
    });
  },
});

export const leaveCommand: Command = defineCommand({
  name: 'leave',
  summary: 'drain this node, hand over leadership, and stop its agent',
  synopsis: ['shoal leave'],
  description:
    'Drains the node --addr names, hands over its leadership if it leads, and stops its agent once its\n' +
    'tasks have moved.',
  options: { ...apiFlags },
  allowPositionals: false,
  run: ({ values }) =>
    withClient(
      values,
      async (client) => {
        process.stderr.write(`draining ${client.address} and leaving the cluster…\n`);
        await client.leave();
        process.stderr.write('its tasks have moved; the agent is leaving\n');
        return 0;
      },
      leaveTimeoutMs,
    ),
});
