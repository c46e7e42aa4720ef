/**
 * `shoal job …`: jobs from files. validate checks a file without a cluster; plan is a dry run on the
 * leader's state (exit 0: nothing would change, 1: something would, 2: an error); apply is idempotent and,
 * with --check-index, refuses a job that changed since its plan; status, history, revert, stop and inspect
 * work on a job by name.
 */
import { readFileSync, statSync } from 'node:fs';
import type { Answer, ShoalClient } from '../../api/index.ts';
import type { JobSpec } from '../../cluster/index.ts';
import { ShoalError, errorMessage, invalidArgument } from '../../shared/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { apiFlags, parseWhole } from '../flags.ts';
import { formatDeployment, formatJson, formatTable } from '../format.ts';
import { formatJobFileProblems, jobFileBytesMax, jobToYaml, parseJobFile } from '../job-file.ts';

const actions = [
  'validate',
  'plan',
  'apply',
  'status',
  'history',
  'revert',
  'promote',
  'stop',
  'inspect',
] as const;
type Action = (typeof actions)[number];

export const jobCommand: Command = defineCommand({
  name: 'job',
  summary: 'jobs from files: validate, plan, apply; status, history, revert, stop, inspect',
  synopsis: [
    'shoal job validate FILE',
    'shoal job plan FILE',
    'shoal job apply [--check-index N] FILE',
    'shoal job status [NAME] [--json]',
    'shoal job history NAME [--json]',
    'shoal job revert NAME VERSION',
    'shoal job promote NAME',
    'shoal job stop [--purge] NAME',
    'shoal job inspect NAME [-o yaml|json]',
  ],
  description:
    'A job file (YAML, or JSON) declares a job: its type (batch, service, system, periodic) and groups\n' +
    'of instances; the cluster keeps it at that shape. ${NAME} in a value is taken from the environment.\n' +
    'validate checks a file on this machine and lists every problem with its line. plan shows what apply\n' +
    'would change — the diff against the live version, instances started and stopped, where they would\n' +
    "go — and the job's modify index; it exits 0 when nothing would change, 1 when something would, 2 on\n" +
    'an error. apply makes a new version if the job changed (an unchanged file changes nothing); with\n' +
    '--check-index N it refuses if the job changed since the plan that printed N. stop stops the\n' +
    'instances (--purge also forgets the job); revert applies an earlier version again; promote lets a\n' +
    'deployment waiting on its canaries replace the rest (shoal deployment status NAME shows it). NAME is looked up\n' +
    'in --namespace (default "default"). The JSON Schema of the file is served at /v1/schema/job.json.',
  options: {
    'check-index': {
      type: 'string',
      value: 'N',
      help: "apply: only if the job's modify index is still N (from plan)",
    },
    namespace: { type: 'string', value: 'NS', help: 'the namespace of the job NAME (default "default")' },
    purge: { type: 'boolean', help: 'stop: also forget the job (its ended tasks stay)' },
    output: {
      type: 'string',
      short: 'o',
      value: 'yaml|json',
      help: 'inspect: the job file format (default yaml)',
    },
    json: { type: 'boolean', help: 'status, history: print the API view as JSON' },
    ...apiFlags,
  },
  allowPositionals: true,
  run: async ({ values, positionals }, usage) => {
    const [action, ...rest] = positionals;
    if (action === undefined) {
      process.stdout.write(usage);
      return 0;
    }
    if (!(actions as readonly string[]).includes(action))
      throw invalidArgument(`shoal job ${action}: unknown; use ${actions.join(', ')} (see shoal job --help)`);
    const one = (what: string): string => {
      if (rest.length !== 1 || rest[0] === undefined)
        throw invalidArgument(`shoal job ${action} takes one ${what}`);
      return rest[0];
    };
    const namespace = values.namespace;
    switch (action as Action) {
      case 'validate': {
        const path = one('FILE');
        const job = readJobFile(path);
        const instances = describeShape(job);
        process.stderr.write(`${path}: job ${job.name} (${job.type}${instances}) is valid\n`);
        return 0;
      }
      case 'plan': {
        const job = readJobFile(one('FILE'));
        // Exit 2 for any error, so a script can tell "changes" (1) from "failed".
        try {
          return await withClient(values, async (client) => printPlan(await client.planJob(job)));
        } catch (error) {
          process.stderr.write(`shoal job plan: ${errorMessage(error)}\n`);
          return 2;
        }
      }
      case 'apply': {
        const job = readJobFile(one('FILE'));
        const checkIndex = parseWhole(values['check-index'], '--check-index', 0, Number.MAX_SAFE_INTEGER);
        return withClient(values, async (client) => {
          const applied = await client.applyJob(job, checkIndex ?? undefined);
          process.stderr.write(
            applied.changed
              ? `job ${applied.name}: version ${applied.version} applied (modify index ${applied.modifyIndex}); shoal job status ${applied.name} follows it\n`
              : `job ${applied.name}: unchanged at version ${applied.version} (modify index ${applied.modifyIndex})\n`,
          );
          return 0;
        });
      }
      case 'status':
        if (rest.length > 1) throw invalidArgument('shoal job status takes at most one NAME');
        return withClient(values, async (client) => {
          const name = rest[0];
          if (name === undefined) {
            const jobs = await client.jobs(namespace);
            process.stdout.write(values.json ? formatJson(jobs) : formatJobs(jobs));
          } else {
            const job = await client.job(name, namespace);
            process.stdout.write(values.json ? formatJson(job) : formatJobDetail(job));
          }
          return 0;
        });
      case 'history': {
        const name = one('NAME');
        return withClient(values, async (client) => {
          const versions = await client.jobVersions(name, namespace);
          process.stdout.write(values.json ? formatJson(versions) : formatVersions(versions));
          return 0;
        });
      }
      case 'revert': {
        if (rest.length !== 2 || rest[0] === undefined)
          throw invalidArgument('shoal job revert takes NAME VERSION');
        const name = rest[0];
        const version = parseWhole(rest[1], 'VERSION', 1, Number.MAX_SAFE_INTEGER) ?? 1;
        return withClient(values, async (client) => {
          const applied = await client.revertJob(name, version, namespace);
          process.stderr.write(
            `job ${applied.name}: version ${version} applied again as version ${applied.version} (modify index ${applied.modifyIndex})\n`,
          );
          return 0;
        });
      }
      case 'promote':
        return withClient(values, async (client) => {
          const deployment = await client.promoteJob(one('job name'), namespace);
          process.stdout.write(formatDeployment(deployment));
          return 0;
        });
      case 'stop': {
        const name = one('NAME');
        return withClient(values, async (client) => {
          const stopped = await client.stopJob(name, values.purge, namespace);
          process.stderr.write(
            `job ${stopped.name}: ${values.purge ? 'stopped and purged' : stopped.changed ? 'stopped' : 'already stopped'}\n`,
          );
          return 0;
        });
      }
      case 'inspect': {
        const name = one('NAME');
        const output = values.output ?? 'yaml';
        if (output !== 'yaml' && output !== 'json') throw invalidArgument('-o must be yaml or json');
        return withClient(values, async (client) => {
          const job = await client.job(name, namespace);
          process.stdout.write(output === 'yaml' ? jobToYaml(job.spec) : formatJson(job.spec));
          return 0;
        });
      }
    }
  },
});

/** A job file read and checked; every problem is printed, one per line, before the command fails. */
export function readJobFile(path: string): JobSpec {
  let text: string;
  try {
    if (statSync(path).size > jobFileBytesMax)
      throw invalidArgument(`${path} is larger than ${jobFileBytesMax} bytes; a job file is a few KiB`);
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if (error instanceof ShoalError) throw error;
    throw invalidArgument(
      `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? errorMessage(error)}`,
    );
  }
  const parsed = parseJobFile(text, { fileName: path, env: process.env });
  if (parsed.ok) return parsed.job;
  process.stderr.write(`${formatJobFileProblems(path, parsed.problems)}\n`);
  throw invalidArgument(
    `${path} has ${parsed.problems.length} problem${parsed.problems.length === 1 ? '' : 's'} (listed above)`,
  );
}

function describeShape(job: JobSpec): string {
  if (job.type === 'system') return ', one instance per eligible node';
  const groups = job.groups ?? [];
  const count =
    job.groups === undefined ? (job.count ?? 1) : groups.reduce((sum, group) => sum + (group.count ?? 1), 0);
  return `, ${count} instance${count === 1 ? '' : 's'}${groups.length > 1 ? ` in ${groups.length} groups` : ''}`;
}

function printPlan(plan: Answer<'planJob'>): number {
  const lines: string[] = [];
  lines.push(
    plan.version === 0
      ? `+ job ${plan.name} (new, version 1, namespace ${plan.namespace})`
      : plan.changed
        ? `~ job ${plan.name} (version ${plan.version} → ${plan.nextVersion})`
        : `  job ${plan.name} (version ${plan.version}, unchanged)`,
  );
  if (plan.version !== 0)
    for (const entry of plan.diff) {
      if (entry.before === undefined) lines.push(`    + ${entry.path}: ${show(entry.after)}`);
      else if (entry.after === undefined) lines.push(`    - ${entry.path}: ${show(entry.before)}`);
      else lines.push(`    ~ ${entry.path}: ${show(entry.before)} → ${show(entry.after)}`);
    }
  if (plan.start.length > 0) {
    lines.push('', `start ${plan.start.length} instance${plan.start.length === 1 ? '' : 's'}:`);
    for (const start of plan.start)
      lines.push(
        `  + ${start.group}[${start.slot}]  ${start.node === null ? `waits: ${start.waits ?? 'for its turn'}` : `on ${start.node}`}  — ${start.reason}`,
      );
  }
  if (plan.stop.length > 0) {
    lines.push('', `stop ${plan.stop.length} instance${plan.stop.length === 1 ? '' : 's'}:`);
    for (const stop of [...plan.stop].sort((a, b) => a.group.localeCompare(b.group) || a.slot - b.slot))
      lines.push(
        `  - ${stop.group}[${stop.slot}] ${stop.id}${stop.node === null ? '' : ` on ${stop.node}`}  — ${stop.reason}`,
      );
  }
  const changes = plan.changed || plan.start.length > 0 || plan.stop.length > 0;
  lines.push(
    '',
    changes
      ? `modify index ${plan.modifyIndex}: apply exactly this with shoal job apply --check-index ${plan.modifyIndex} FILE`
      : `modify index ${plan.modifyIndex}: nothing would change`,
  );
  process.stdout.write(`${lines.join('\n')}\n`);
  return changes ? 1 : 0;
}

function show(value: unknown): string {
  const text = JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}…` : text;
}

function countsText(states: Readonly<Record<string, number>>): string {
  const order = ['running', 'starting', 'assigned', 'pending', 'finished', 'failed', 'killed', 'lost'];
  const parts = order.filter((state) => (states[state] ?? 0) > 0).map((state) => `${states[state]} ${state}`);
  return parts.length === 0 ? '-' : parts.join(', ');
}

function formatJobs(jobs: Answer<'jobs'>): string {
  if (jobs.length === 0) return 'no jobs; shoal job apply FILE makes one (examples/jobs/)\n';
  return formatTable([
    ['NAME', 'NAMESPACE', 'TYPE', 'VERSION', 'STATUS', 'INSTANCES'],
    ...jobs.map((job) => [
      job.name,
      job.namespace,
      job.type,
      String(job.version),
      job.status,
      countsText(job.states),
    ]),
  ]);
}

function formatJobDetail(job: Answer<'job'>): string {
  const lines = [
    `job ${job.name} (namespace ${job.namespace}): ${job.type}, version ${job.version}, ${job.status}, modify index ${job.modifyIndex}`,
  ];
  if (job.nextLaunchAt !== null) lines.push(`next launch ${job.nextLaunchAt}`);
  if (job.lastLaunchAt !== null) lines.push(`last launch ${job.lastLaunchAt}`);
  for (const group of job.groups)
    lines.push(
      `group ${group.name}: ${group.count === null ? 'one per eligible node' : `${group.count} wanted`}; ${countsText(group.states)}`,
    );
  const live = job.instances.filter((instance) => instance.desired !== 'none');
  if (live.length > 0) {
    lines.push('');
    lines.push(
      formatTable([
        ['ID', 'GROUP', 'SLOT', 'TASK', 'VERSION', 'STATE', 'NODE', 'REASON'],
        ...[...live]
          .sort((a, b) => a.group.localeCompare(b.group) || a.slot - b.slot)
          .map((instance) => [
            instance.id,
            instance.group,
            String(instance.slot),
            instance.task,
            String(instance.version),
            instance.state,
            instance.node ?? '-',
            instance.reason ?? '',
          ]),
      ]).trimEnd(),
    );
  }
  // One line per waiting instance (its tasks wait for the same reason when they run together).
  const waiting = new Map<string, string>();
  for (const instance of live)
    if (instance.state === 'pending' && instance.reason !== null)
      waiting.set(`${instance.group}[${instance.slot}]`, instance.reason);
  if (waiting.size > 0) {
    lines.push('', 'placement failures:');
    for (const [where, reason] of [...waiting].sort(([a], [b]) => a.localeCompare(b)))
      lines.push(`  ${where}: ${reason}`);
  }
  return `${lines.join('\n')}\n`;
}

function formatVersions(versions: Answer<'jobVersions'>): string {
  return formatTable([
    ['VERSION', 'APPLIED', 'INDEX'],
    ...versions.map((version) => [String(version.version), version.at, String(version.index)]),
  ]);
}

export type { ShoalClient };
