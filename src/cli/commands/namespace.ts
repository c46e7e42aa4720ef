/** `shoal namespace ls|set`: the tenants' share weights and quotas. */
import { namespaceWeightMax } from '../../cluster/index.ts';
import { invalidArgument } from '../../shared/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { apiFlags, parseCounts, parseMebibytes, parseNumber } from '../flags.ts';
import { formatJson, formatNamespace, formatNamespaces } from '../format.ts';

/** A namespace's share weight when `set` is not given one: all namespaces share equally. */
const weightDefault = 1;

export const namespaceCommand: Command = defineCommand({
  name: 'namespace',
  summary: "list namespaces' share weights and quotas, or set one's",
  synopsis: [
    'shoal namespace ls [--json]',
    'shoal namespace set NS [--weight W] [--quota-cpu CORES] [--quota-memory MIB] [--quota-disk MIB]',
    '                       [--quota-device KIND=COUNT]...',
  ],
  description:
    "ls lists every namespace's weight and quota. set gives a namespace its weight (its share of a full\n" +
    'cluster against the others) and its quota (the most it may hold at once); a quota flag left out is\n' +
    'no limit.',
  options: {
    json: { type: 'boolean', help: 'ls: print the API view as JSON' },
    weight: { type: 'string', value: 'W', help: `set: the share weight (default ${weightDefault})` },
    'quota-cpu': { type: 'string', value: 'CORES', help: 'set: the most CPU its tasks may reserve' },
    'quota-memory': { type: 'string', value: 'MIB', help: 'set: the most memory its tasks may reserve' },
    'quota-disk': { type: 'string', value: 'MIB', help: 'set: the most disk its tasks may reserve' },
    'quota-device': {
      type: 'string',
      multiple: true,
      value: 'KIND=COUNT',
      help: 'set: the most devices of a kind its tasks may hold',
    },
    ...apiFlags,
  },
  allowPositionals: true,
  run: async ({ values, positionals }, usage) => {
    const [action, name, ...extra] = positionals;
    if (action === undefined) {
      process.stdout.write(usage);
      return 0;
    }
    if (action === 'ls' && name === undefined) {
      return withClient(values, async (client) => {
        const policies = await client.namespaces();
        process.stdout.write(values.json ? formatJson(policies) : formatNamespaces(policies));
        return 0;
      });
    }
    if (action !== 'set' || name === undefined || extra.length > 0)
      throw invalidArgument('use shoal namespace ls, or shoal namespace set NAME [--weight W] [--quota-…]');
    const weight =
      parseNumber(values.weight, '--weight', (n) => n > 0 && n <= namespaceWeightMax, 'a positive number') ??
      weightDefault;
    const quotaCores = parseNumber(values['quota-cpu'], '--quota-cpu', (n) => n >= 0, 'a number of cores');
    const memoryBytes = parseMebibytes(values['quota-memory'], '--quota-memory');
    const diskBytes = parseMebibytes(values['quota-disk'], '--quota-disk');
    const devices = parseCounts(values['quota-device'], '--quota-device', true);
    const quota = {
      ...(quotaCores === null ? {} : { cpuMillis: Math.round(quotaCores * 1000) }),
      ...(memoryBytes === null ? {} : { memoryBytes }),
      ...(diskBytes === null ? {} : { diskBytes }),
      ...(Object.keys(devices).length === 0 ? {} : { devices }),
    };
    return withClient(values, async (client) => {
      const policy = await client.setNamespace({
        name,
        weight,
        quota: Object.keys(quota).length === 0 ? null : quota,
      });
      process.stdout.write(formatNamespace(policy));
      return 0;
    });
  },
});
