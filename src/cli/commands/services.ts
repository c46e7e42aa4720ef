/**
 * `shoal services [NAME]`: the services and the instances of each that answer now (what DNS gives), and
 * `shoal deployment status|pause|resume|promote|fail`: a service job's rolling updates.
 */
import { deploymentActions, type DeploymentAction } from '../../cluster/index.ts';
import { invalidArgument } from '../../shared/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { apiFlags } from '../flags.ts';
import { formatDeployment, formatJson, formatService, formatServices } from '../format.ts';

const namespaceFlag = {
  namespace: { type: 'string', value: 'NS', help: 'the namespace (default "default"; services: all)' },
} as const;
const jsonFlag = { json: { type: 'boolean', help: 'print the API view as JSON' } } as const;

export const servicesCommand: Command = defineCommand({
  name: 'services',
  summary: "list services, or one service's instances that answer now",
  synopsis: ['shoal services [--namespace NS] [--json]', 'shoal services NAME [--namespace NS] [--json]'],
  description:
    'A service is a job (or replicas run with --name NAME); its instances answer while they run and\n' +
    'their health checks pass (or they have none). Every node answers DNS for them too:\n' +
    'dig @127.0.0.1 -p 8600 NAME.service.shoal (A), or SRV for ports (_PORT._tcp.NAME.service.shoal).',
  options: { ...namespaceFlag, ...jsonFlag, ...apiFlags },
  allowPositionals: true,
  run: ({ values, positionals }) => {
    if (positionals.length > 1) throw invalidArgument('shoal services takes at most one NAME');
    const [name] = positionals;
    return withClient(values, async (client) => {
      if (name === undefined) {
        const services = await client.services(values.namespace);
        process.stdout.write(values.json ? formatJson(services) : formatServices(services));
      } else {
        const service = await client.service(name, values.namespace);
        process.stdout.write(values.json ? formatJson(service) : formatService(service));
      }
      return 0;
    });
  },
});

const deploymentVerbs = ['status', ...deploymentActions] as const;

export const deploymentCommand: Command = defineCommand({
  name: 'deployment',
  summary: "a service job's rolling updates: status, pause, resume, promote, fail",
  synopsis: [
    'shoal deployment status JOB|ID [--namespace NS] [--json]',
    'shoal deployment pause|resume|promote|fail JOB|ID [--namespace NS]',
  ],
  description:
    'Applying a new version of a service job starts a deployment: old instances are replaced a few at a\n' +
    "time (the job's update policy). status shows the job's newest deployment (or the one with that id,\n" +
    'd and digits); pause stops replacing, resume goes on, promote lets canaries be followed by the rest,\n' +
    'fail ends it (and reverts the job to its last good version when the policy says autoRevert).',
  options: { ...namespaceFlag, ...jsonFlag, ...apiFlags },
  allowPositionals: true,
  run: ({ values, positionals }, usage) => {
    const [verb, target, ...extra] = positionals;
    if (verb === undefined) {
      process.stdout.write(usage);
      return Promise.resolve(0);
    }
    if (!(deploymentVerbs as readonly string[]).includes(verb))
      throw invalidArgument(`shoal deployment ${verb}: unknown; use ${deploymentVerbs.join(', ')}`);
    if (target === undefined || extra.length > 0)
      throw invalidArgument(`shoal deployment ${verb} takes one JOB name or deployment ID`);
    return withClient(values, async (client) => {
      // An id is d and digits; anything else names a job, whose newest deployment is meant.
      let id = target;
      if (!/^d[0-9]+$/.test(target)) {
        const deployments = await client.jobDeployments(target, values.namespace);
        const newest = deployments.at(-1);
        if (newest === undefined) throw invalidArgument(`job ${target} has had no deployment`);
        id = newest.id;
      }
      const deployment =
        verb === 'status'
          ? await client.deployment(id)
          : await client.controlDeployment(id, verb as DeploymentAction);
      process.stdout.write(values.json ? formatJson(deployment) : formatDeployment(deployment));
      return 0;
    });
  },
});
