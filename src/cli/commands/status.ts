/** `shoal status` and `shoal version`. */
import { shoalVersion } from '../../node/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { apiFlags } from '../flags.ts';
import { formatJson, formatStatus } from '../format.ts';

export const statusCommand: Command = defineCommand({
  name: 'status',
  summary: 'show the leader, term, voters and commit index',
  synopsis: ['shoal status [--json]'],
  description:
    'Shows the Raft view of the node --addr names: its role, the leader, the term, voters and learners,\n' +
    'and the commit index; and a warning when the cluster cannot survive the loss of a node.',
  options: { json: { type: 'boolean', help: 'print the API view as JSON' }, ...apiFlags },
  allowPositionals: false,
  run: ({ values }) =>
    withClient(values, async (client) => {
      const view = await client.status();
      process.stdout.write(values.json ? formatJson(view) : formatStatus(view));
      return 0;
    }),
});

export const versionCommand: Command = defineCommand({
  name: 'version',
  summary: "print shoal's version",
  synopsis: ['shoal version'],
  description: 'Prints the version of this binary.',
  options: {},
  allowPositionals: false,
  run: () => {
    process.stdout.write(`${shoalVersion}\n`);
    return Promise.resolve(0);
  },
});
