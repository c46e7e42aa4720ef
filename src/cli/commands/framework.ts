/** `shoal framework ls|inspect|teardown`: the external schedulers (frameworks) the cluster knows. */
import { invalidArgument } from '../../shared/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { apiFlags } from '../flags.ts';
import { formatFrameworkDetail, formatFrameworks, formatJson } from '../format.ts';

export const frameworkCommand: Command = defineCommand({
  name: 'framework',
  summary: 'list the frameworks (external schedulers), inspect one, or tear one down',
  synopsis: [
    'shoal framework ls [--json]',
    'shoal framework inspect ID [--json]',
    'shoal framework teardown ID',
  ],
  description:
    'Frameworks subscribe to POST /v1/scheduler (docs/api.md) and launch tasks on the offers they get.\n' +
    'ls lists them: connected, or disconnected and kept for their failover timeout. inspect shows one\n' +
    'with its live tasks. teardown does what its TEARDOWN call would: kills its tasks and forgets it.',
  options: {
    json: { type: 'boolean', help: 'ls, inspect: print the API view as JSON' },
    ...apiFlags,
  },
  allowPositionals: true,
  run: async ({ values, positionals }, usage) => {
    const [action, id, ...extra] = positionals;
    if (action === undefined) {
      process.stdout.write(usage);
      return 0;
    }
    if (action === 'ls' && id === undefined)
      return withClient(values, async (client) => {
        const frameworks = await client.call('frameworks');
        process.stdout.write(values.json ? formatJson(frameworks) : formatFrameworks(frameworks));
        return 0;
      });
    if (id === undefined || extra.length > 0 || (action !== 'inspect' && action !== 'teardown'))
      throw invalidArgument(
        'use shoal framework ls, shoal framework inspect ID, or shoal framework teardown ID',
      );
    if (action === 'inspect')
      return withClient(values, async (client) => {
        const framework = await client.call('framework', { params: { framework: id } });
        process.stdout.write(values.json ? formatJson(framework) : formatFrameworkDetail(framework));
        return 0;
      });
    return withClient(values, async (client) => {
      await client.call('teardownFramework', { params: { framework: id } });
      process.stdout.write(`framework ${id} torn down: its tasks are being killed\n`);
      return 0;
    });
  },
});
