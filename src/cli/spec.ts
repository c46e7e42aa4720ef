/**
 * `shoal run`'s flags and the TaskSpec they become: the flags are declared here beside their translation,
 * and the result is checked by the cluster's own schema, so the CLI refuses what the leader would.
 * Pure: flag values in, a TaskSpec out, or a one-line INVALID_ARGUMENT error naming the flag.
 */
import { basename } from 'node:path';
import {
  defaultJobName,
  healthCheckDefaults,
  networkModes,
  pidsMaxDefault,
  pidsMaxLimit,
  type HealthCheckSpec,
  describeIssues,
  priorityDefault,
  priorityMax,
  priorityMin,
  replicasMax,
  restartDelayMsMax,
  restartPolicies,
  taskDrivers,
  taskNameLengthMax,
  taskSpecSchema,
  type LabelConstraintSpec,
  type RestartSpec,
  type TaskSpec,
} from '../cluster/index.ts';
import { invalidArgument, mebibyte } from '../shared/index.ts';
import {
  labelRuleForms,
  parseChoice,
  parseCores,
  parseCounts,
  parseLabelRule,
  parseMebibytes,
  parseNumber,
  parsePairs,
  parsePorts,
  parseWhole,
  type FlagSpecs,
  type FlagValues,
} from './flags.ts';

/** Weight of `--affinity RULE` (and, negated, of `--avoid RULE`). */
export const affinityWeightDefault = 50;
/** What a task reserves when --cpu and --memory are not given. */
export const taskCpuMillisDefault = 100;
export const taskMemoryMiBDefault = 64;
/** on-failure gives up after this many restarts unless --max-restarts says otherwise; always keeps going. */
export const onFailureRestartsMaxDefault = 3;
export const restartDelaySecondsDefault = 1;
export const restartDelaySecondsMax = restartDelayMsMax / 1000;

/** Where a task may run and how it shares the cluster. */
export const placementFlags = {
  disk: {
    type: 'string',
    value: 'MIB',
    help: 'disk the task needs on its node; a task using more is stopped as failed',
  },
  device: {
    type: 'string',
    multiple: true,
    value: 'KIND=COUNT',
    help: 'devices the task needs (nodes offer them with --device)',
  },
  port: {
    type: 'string',
    multiple: true,
    value: 'NAME[=PORT][:TO]',
    help: 'a port: NAME alone gets a free host port, NAME=PORT that one; docker: :TO is the container port',
  },
  network: {
    type: 'string',
    value: 'bridge|host|none',
    help: "docker's network (default bridge with ports, else none); exec: host (default) or none",
  },
  user: {
    type: 'string',
    value: 'NAME|UID[:GID]',
    help: "the user the task runs as (exec: default nobody, root needs agents with --allow-root-tasks; docker: default the image's)",
  },
  pids: {
    type: 'string',
    value: 'N',
    help: `most processes and threads the task may have at once (default ${pidsMaxDefault})`,
  },
  check: {
    type: 'string',
    multiple: true,
    value: 'CHECK',
    help: 'a health check: http:PORT/PATH, tcp:PORT or "exec:CMD ARGS" (PORT is a port name)',
  },
  'check-interval': {
    type: 'string',
    value: 'SECONDS',
    help: `how often checks run (default ${healthCheckDefaults.intervalMs / 1000})`,
  },
  'check-timeout': {
    type: 'string',
    value: 'SECONDS',
    help: `a check that takes longer fails (default ${healthCheckDefaults.timeoutMs / 1000})`,
  },
  'check-grace': {
    type: 'string',
    value: 'SECONDS',
    help: 'failures this soon after the start do not count (default 0)',
  },
  'check-failures': {
    type: 'string',
    value: 'N',
    help: `unhealthy after N failures in a row (default ${healthCheckDefaults.failuresBeforeUnhealthy})`,
  },
  'check-restart': {
    type: 'string',
    value: 'N',
    help: 'stop the task as failed after N failures in a row (its restart policy decides the rest)',
  },
  namespace: {
    type: 'string',
    value: 'NS',
    help: 'the tenant, for fair sharing and quotas (default: default)',
  },
  constraint: { type: 'string', multiple: true, value: 'RULE', help: 'run only on nodes whose labels match' },
  affinity: { type: 'string', multiple: true, value: 'RULE', help: 'prefer nodes whose labels match' },
  avoid: { type: 'string', multiple: true, value: 'RULE', help: 'prefer nodes whose labels do not match' },
  job: { type: 'string', value: 'NAME', help: 'the job the task belongs to (replicas: default the name)' },
  'max-running': {
    type: 'string',
    value: 'N',
    help: "at most N of the job's tasks run at once (needs a job)",
  },
  'distinct-nodes': { type: 'boolean', help: "at most one of the job's tasks per node (needs a job)" },
  'spread-over': {
    type: 'string',
    value: 'LABEL',
    help: "spread the job's tasks evenly over this label's values (needs a job)",
  },
  spread: { type: 'boolean', help: 'prefer the node with the most free CPU (default: fill nodes in turn)' },
  'not-preemptible': { type: 'boolean', help: 'never evict this task for a higher-priority one' },
  'on-disconnect': {
    type: 'string',
    value: 'stop|keep',
    help: 'when its node loses the leader: stop the task (default) or keep it running',
  },
  reschedule: {
    type: 'string',
    value: 'always|never',
    help: 'when its node is lost: place it again elsewhere (default always) or leave it lost',
  },
} as const satisfies FlagSpecs;

/** Every flag that shapes the TaskSpec `shoal run` submits. */
export const taskSpecFlags = {
  name: {
    type: 'string',
    value: 'NAME',
    help: "the task's name (default: the image's repository, else the command's file name)",
  },
  driver: { type: 'string', value: 'exec|docker', help: 'what runs the task (default exec)' },
  image: {
    type: 'string',
    value: 'IMAGE',
    help: 'the image to run: docker pulls it into its engine; exec pulls it itself and runs the task in its root',
  },
  env: { type: 'string', multiple: true, value: 'K=V', help: "a variable in the task's environment" },
  cpu: { type: 'string', value: 'CORES', help: `CPU to reserve (default ${taskCpuMillisDefault / 1000})` },
  memory: {
    type: 'string',
    value: 'MIB',
    help: `memory to reserve and limit to (default ${taskMemoryMiBDefault})`,
  },
  priority: {
    type: 'string',
    value: `${priorityMin}-${priorityMax}`,
    help: `higher runs first and may preempt lower (default ${priorityDefault})`,
  },
  ...placementFlags,
  replicas: {
    type: 'string',
    value: 'N',
    help: `submit N tasks of this spec as one job, named NAME-0… (1 to ${replicasMax})`,
  },
  restart: {
    type: 'string',
    value: 'never|on-failure|always',
    help: 'restart the task when it ends (default never)',
  },
  'max-restarts': {
    type: 'string',
    value: 'N',
    help: `give up after N restarts (default: ${onFailureRestartsMaxDefault} for on-failure, none for always)`,
  },
  'restart-delay': {
    type: 'string',
    value: 'SECONDS',
    help: `wait before a restart, doubled each time (default ${restartDelaySecondsDefault})`,
  },
} as const satisfies FlagSpecs;

/** How the usage text explains RULE. */
export const labelRuleNote = `RULE is ${labelRuleForms}.`;

type SpecFields = { -readonly [K in keyof TaskSpec]: TaskSpec[K] };

/** The spec fields the placement flags set; fields whose flag is absent are left out. */
export function placementSpec(
  values: FlagValues<typeof placementFlags>,
): Pick<
  SpecFields,
  | 'constraints'
  | 'diskBytes'
  | 'devices'
  | 'ports'
  | 'dynamicPorts'
  | 'portTargets'
  | 'network'
  | 'user'
  | 'pidsMax'
  | 'checks'
  | 'namespace'
  | 'labelConstraints'
  | 'affinities'
  | 'job'
  | 'jobRunningMax'
  | 'distinctNodes'
  | 'spreadOver'
  | 'packing'
  | 'preemptible'
  | 'onDisconnect'
  | 'reschedule'
> {
  const constraints: Record<string, string> = {};
  const rules: LabelConstraintSpec[] = [];
  for (const text of values.constraint) {
    const rule = parseLabelRule(text, '--constraint');
    // Plain equalities keep their own field, which specs from before label rules used.
    if (rule.operator === '=') constraints[rule.key] = rule.value;
    else rules.push(rule);
  }
  const affinities = [
    ...values.affinity.map((text) => ({
      constraint: parseLabelRule(text, '--affinity'),
      weight: affinityWeightDefault,
    })),
    ...values.avoid.map((text) => ({
      constraint: parseLabelRule(text, '--avoid'),
      weight: -affinityWeightDefault,
    })),
  ];
  const diskBytes = parseMebibytes(values.disk, '--disk');
  const jobRunningMax = parseWhole(values['max-running'], '--max-running', 1, Number.MAX_SAFE_INTEGER);
  const onDisconnect = parseChoice(values['on-disconnect'], '--on-disconnect', ['stop', 'keep']);
  const reschedule = parseChoice(values.reschedule, '--reschedule', ['always', 'never']);
  const network = parseChoice(values.network, '--network', networkModes);
  const pidsMax = parseWhole(values.pids, '--pids', 8, pidsMaxLimit);
  return {
    constraints,
    ...(rules.length === 0 ? {} : { labelConstraints: rules }),
    ...(affinities.length === 0 ? {} : { affinities }),
    ...(diskBytes === null ? {} : { diskBytes }),
    ...(values.device.length === 0 ? {} : { devices: parseCounts(values.device, '--device') }),
    ...parsePorts(values.port, '--port'),
    ...(network === null ? {} : { network }),
    ...(values.user === undefined ? {} : { user: values.user }),
    ...(pidsMax === null ? {} : { pidsMax }),
    ...(values.check.length === 0 ? {} : { checks: values.check.map((text) => parseCheck(text, values)) }),
    ...(values.namespace === undefined ? {} : { namespace: values.namespace }),
    ...(values.job === undefined ? {} : { job: values.job }),
    ...(jobRunningMax === null ? {} : { jobRunningMax }),
    ...(values['distinct-nodes'] ? { distinctNodes: true } : {}),
    ...(values['spread-over'] === undefined ? {} : { spreadOver: values['spread-over'] }),
    ...(values.spread ? { packing: 'spread' as const } : {}),
    ...(values['not-preemptible'] ? { preemptible: false } : {}),
    ...(onDisconnect === null ? {} : { onDisconnect }),
    ...(reschedule === null ? {} : { reschedule }),
  };
}

/** One --check, with the --check-* settings: http:PORT/PATH, tcp:PORT or "exec:CMD ARGS". */
export function parseCheck(text: string, values: FlagValues<typeof placementFlags>): HealthCheckSpec {
  const seconds = (flag: 'check-interval' | 'check-timeout' | 'check-grace', min: number): number | null => {
    const value = parseNumber(
      values[flag],
      `--${flag}`,
      (n) => n >= min && n <= 3600,
      `seconds from ${min} to 3600`,
    );
    return value === null ? null : Math.round(value * 1000);
  };
  const intervalMs = seconds('check-interval', 0.1) ?? healthCheckDefaults.intervalMs;
  const timeoutMs = seconds('check-timeout', 0.01) ?? Math.min(healthCheckDefaults.timeoutMs, intervalMs);
  const graceMs = seconds('check-grace', 0) ?? healthCheckDefaults.graceMs;
  const failures = parseWhole(values['check-failures'], '--check-failures', 1, 100);
  const restartAfterFailures = parseWhole(values['check-restart'], '--check-restart', 1, 10_000);
  const common = {
    intervalMs,
    timeoutMs,
    graceMs,
    failuresBeforeUnhealthy: failures ?? healthCheckDefaults.failuresBeforeUnhealthy,
    successesBeforeHealthy: healthCheckDefaults.successesBeforeHealthy,
    ...(restartAfterFailures === null ? {} : { restartAfterFailures }),
  };
  const http = /^http:([A-Za-z0-9][A-Za-z0-9._-]*)(\/\S*)?$/.exec(text);
  if (http) return { type: 'http', port: http[1] ?? '', path: http[2] ?? '/', ...common };
  const tcp = /^tcp:([A-Za-z0-9][A-Za-z0-9._-]*)$/.exec(text);
  if (tcp) return { type: 'tcp', port: tcp[1] ?? '', ...common };
  const exec = /^exec:\s*(\S.*)$/.exec(text);
  if (exec) return { type: 'exec', command: (exec[1] ?? '').trim().split(/\s+/), ...common };
  throw invalidArgument(
    `--check ${JSON.stringify(text)} is not http:PORT/PATH, tcp:PORT or "exec:CMD ARGS" (PORT names one of the task's --port)`,
  );
}

/** --restart never|on-failure|always, --max-restarts N, --restart-delay SECONDS. */
export function restartSpec(values: FlagValues<typeof taskSpecFlags>): RestartSpec | null {
  const policy = parseChoice(values.restart, '--restart', restartPolicies);
  if (policy === null) {
    if (values['max-restarts'] !== undefined || values['restart-delay'] !== undefined)
      throw invalidArgument('--max-restarts and --restart-delay need --restart on-failure or always');
    return null;
  }
  const maxRestarts = parseWhole(values['max-restarts'], '--max-restarts', 0, Number.MAX_SAFE_INTEGER);
  const delaySeconds = parseNumber(
    values['restart-delay'],
    '--restart-delay',
    (n) => n >= 0 && n <= restartDelaySecondsMax,
    `a number of seconds from 0 to ${restartDelaySecondsMax}`,
  );
  return {
    policy,
    maxRestarts: maxRestarts ?? (policy === 'on-failure' ? onFailureRestartsMaxDefault : null),
    delayMs: Math.round((delaySeconds ?? restartDelaySecondsDefault) * 1000),
  };
}

/** --replicas N (default 1). */
export function replicaCount(values: { readonly replicas: string | undefined }): number {
  return parseWhole(values.replicas, '--replicas', 1, replicasMax) ?? 1;
}

/**
 * The repository an image reference names, without registry, path, tag or digest:
 * `127.0.0.1:5000/team/busybox:1` → `busybox`, `nginx@sha256:…` → `nginx`. A registry's port sits before
 * the first `/`, a tag after the last, so the last path part with its `:tag` cut is the repository.
 */
export function imageRepositoryName(image: string): string {
  const withoutDigest = image.split('@')[0] ?? '';
  const last = withoutDigest.slice(withoutDigest.lastIndexOf('/') + 1);
  return last.split(':')[0] ?? '';
}

/** A task's name when --name is not given: the image's repository, else the command's file name. */
export function defaultTaskName(image: string | undefined, command: readonly string[]): string {
  const base = image !== undefined ? imageRepositoryName(image) : basename(command[0] ?? '');
  const name = base
    .replace(/[^A-Za-z0-9._-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, taskNameLengthMax);
  return name === '' ? 'task' : name;
}

/** The TaskSpec of `shoal run FLAGS -- COMMAND…`, checked by the cluster's schema. */
export function buildSpec(values: FlagValues<typeof taskSpecFlags>, command: readonly string[]): TaskSpec {
  const driver = parseChoice(values.driver ?? 'exec', '--driver', taskDrivers) ?? 'exec';
  const cpuMillis = parseCores(values.cpu, '--cpu') ?? taskCpuMillisDefault;
  const memoryMiB =
    parseNumber(
      values.memory,
      '--memory',
      (n) => Number.isSafeInteger(n) && n > 0,
      'a positive whole number of MiB',
    ) ?? taskMemoryMiBDefault;
  const priority = parseWhole(values.priority, '--priority', priorityMin, priorityMax) ?? priorityDefault;
  const name = values.name ?? defaultTaskName(values.image, command);
  const placement = placementSpec(values);
  // Replicas form one job; name it here, so the job's rules (--distinct-nodes…) pass the schema.
  const job = placement.job ?? (replicaCount(values) > 1 ? defaultJobName({ name }) : undefined);
  const restart = restartSpec(values);
  const candidate = {
    name,
    driver,
    command: [...command],
    ...(values.image === undefined ? {} : { image: values.image }),
    cpuMillis,
    memoryBytes: memoryMiB * mebibyte,
    priority,
    env: parsePairs(values.env, '--env'),
    ...placement,
    ...(job === undefined ? {} : { job }),
    ...(restart === null ? {} : { restart }),
  };
  const parsed = taskSpecSchema.safeParse(candidate);
  if (!parsed.success) throw invalidArgument(describeIssues(parsed.error));
  return parsed.data;
}
