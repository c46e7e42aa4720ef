/**
 * The `shoal` command line's commands. `shoal agent` runs a node; every other command talks to a node's HTTP API
 * (--addr or SHOAL_ADDR, default the local node). Errors print one line and exit non-zero.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { join, basename } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ApiClient, replicasMax, startApiServer } from '../api/index.ts';
import {
  describeIssues,
  priorityDefault,
  restartPolicies,
  taskSpecSchema,
  type NamespacePolicySpec,
  type RestartSpec,
  type TaskSpec,
} from '../cluster/index.ts';
import { parseHostPort, parseJoinTarget, formatHostPort } from '../node/address.ts';
import { validateClusterKey } from '../node/identity.ts';
import {
  ShoalNode,
  shoalVersion,
  type MemberView,
  type StatusView,
  type TaskDetailView,
  type TaskView,
} from '../node/node.ts';
import { defaultVoterPolicy } from '../election/index.ts';
import { ShoalError, errorMessage, invalidArgument, type ShoalErrorCode } from '../shared/errors.ts';
import type { LogFrameJson } from '../shared/log-frames.ts';
import { createLogger, type LogLevel } from '../shared/log.ts';
import { parseCounts, parseMebibytes, placementSpec } from './placement.ts';

export const defaultListen = '0.0.0.0:4700';
export const defaultApi = '127.0.0.1:4701';
const mebibyte = 1024 * 1024;
/** How long `shoal run` keeps resending a submission that no leader confirmed (same id, so safe). */
const submitRetryMs = 30_000;

const usage = `shoal ${shoalVersion}: a datacenter operating system in one binary

Usage:
  shoal agent [--data-dir DIR] [--listen HOST:PORT] [--api HOST:PORT] [--join HOST:PORT]...
              [--key KEY | --key-file FILE] [--name NAME] [--cpu CORES] [--memory MIB] [--label K=V]...
              [--docker-socket PATH] [--log-level debug|info|warn|error] [--raft-compact-entries N]
              [--voter-removal-delay SECONDS] [--disk MIB] [--device KIND=COUNT]... [--preemption-gap N]
  shoal run [--name NAME] [--cpu CORES] [--memory MIB] [--disk MIB] [--device KIND=COUNT]...
            [--port NAME=PORT]... [--priority 0-100] [--namespace NS] [--driver exec|docker]
            [--image IMAGE] [--env K=V]... [--constraint RULE]... [--affinity RULE]... [--avoid RULE]...
            [--replicas N [--gang]] [--job NAME] [--max-running N] [--distinct-nodes]
            [--spread-over LABEL] [--spread] [--not-preemptible] [--on-disconnect stop|keep]
            [--restart never|on-failure|always] [--max-restarts N] [--restart-delay SECONDS]
            [-d|--detach] -- CMD ARGS...
            RULE is KEY=VALUE, KEY!=VALUE, KEY=~REGEX, 'KEY in A,B' or 'KEY notin A,B'
                                    submit tasks; without --detach, show a task's events until it runs or ends
  shoal ps [--json]                 list tasks
  shoal inspect ID [--json]         show a task and its recent events (pulls, starts, exits, restarts)
  shoal logs [-f|--follow] ID       print a task's stdout and stderr; -f streams them until the task ends
  shoal kill ID                     stop a task
  shoal drain NODE [--cancel]       stop placing tasks on NODE and move its tasks elsewhere
  shoal leave                       drain this node, hand over leadership, and stop its agent
  shoal members [--json]            list nodes
  shoal namespace ls [--json]       list namespaces' share weights and quotas
  shoal namespace set NS [--weight W] [--quota-cpu CORES] [--quota-memory MIB] [--quota-disk MIB]
                         [--quota-device KIND=COUNT]...   set a namespace's weight and quota
  shoal status [--json]             show the leader, term, voters and commit index
  shoal version

Commands other than agent reach a node with --addr HOST:PORT or SHOAL_ADDR (default ${defaultApi}).`;

type Options = ParseArgsConfig['options'];

function parse(args: string[], options: Options, allowPositionals: boolean): ReturnType<typeof parseArgs> {
  try {
    return parseArgs({
      args,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals,
      strict: true,
    });
  } catch (error) {
    // parseArgs explains over several lines; the CLI promises one.
    const message = errorMessage(error)
      .split('\n')
      .map((line) => line.trim().replace(/\.$/, ''))
      .filter((line) => line !== '' && !line.startsWith('To specify a positional'))
      .join('; ');
    throw invalidArgument(`${message}; see shoal --help`);
  }
}

function stringValue(values: Record<string, unknown>, key: string): string | undefined {
  const value = values[key];
  return typeof value === 'string' ? value : undefined;
}

function stringList(values: Record<string, unknown>, key: string): string[] {
  const value = values[key];
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

function parsePairs(pairs: string[], flag: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    if (at <= 0) throw invalidArgument(`${flag} ${JSON.stringify(pair)} is not KEY=VALUE`);
    result[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return result;
}

function parseNumber(
  value: string | undefined,
  flag: string,
  check: (n: number) => boolean,
  what: string,
): number | null {
  if (value === undefined) return null;
  const number = Number(value);
  if (value.trim() === '' || !Number.isFinite(number) || !check(number)) {
    throw invalidArgument(`${flag} ${JSON.stringify(value)} must be ${what}`);
  }
  return number;
}

function apiAddress(values: Record<string, unknown>): string {
  const address = stringValue(values, 'addr') ?? process.env['SHOAL_ADDR'] ?? defaultApi;
  return formatHostPort(parseHostPort(address, '--addr'));
}

const addrOption: Options = { addr: { type: 'string' } };

async function agent(args: string[]): Promise<void> {
  const { values } = parse(
    args,
    {
      'data-dir': { type: 'string' },
      listen: { type: 'string' },
      api: { type: 'string' },
      join: { type: 'string', multiple: true },
      key: { type: 'string' },
      'key-file': { type: 'string' },
      name: { type: 'string' },
      cpu: { type: 'string' },
      memory: { type: 'string' },
      label: { type: 'string', multiple: true },
      'docker-socket': { type: 'string' },
      'log-level': { type: 'string' },
      'raft-compact-entries': { type: 'string' },
      'voter-removal-delay': { type: 'string' },
      disk: { type: 'string' },
      device: { type: 'string', multiple: true },
      'preemption-gap': { type: 'string' },
    },
    false,
  );
  if (values['help'] === true) {
    console.log(usage);
    return;
  }
  const logLevel = (stringValue(values, 'log-level') ?? 'info') as LogLevel;
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel))
    throw invalidArgument('--log-level must be debug, info, warn or error');
  const keyFlag = stringValue(values, 'key');
  const keyFile = stringValue(values, 'key-file');
  if (keyFlag !== undefined && keyFile !== undefined)
    throw invalidArgument('give --key or --key-file, not both');
  let clusterKey: string | null = null;
  if (keyFlag !== undefined) clusterKey = validateClusterKey(keyFlag, '--key');
  if (keyFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(keyFile, 'utf8');
    } catch (error) {
      throw invalidArgument(`cannot read --key-file ${keyFile}: ${errorMessage(error)}`);
    }
    clusterKey = validateClusterKey(text, `--key-file ${keyFile}`);
  }
  const cpu = parseNumber(
    stringValue(values, 'cpu'),
    '--cpu',
    (n) => n > 0 && n <= 1000,
    'a positive number of cores',
  );
  const memory = parseNumber(
    stringValue(values, 'memory'),
    '--memory',
    (n) => Number.isInteger(n) && n > 0,
    'a positive whole number of MiB',
  );
  const compactEntries = parseNumber(
    stringValue(values, 'raft-compact-entries'),
    '--raft-compact-entries',
    (n) => Number.isInteger(n) && n >= 2,
    'a whole number of entries, at least 2',
  );
  const removalDelayS = parseNumber(
    stringValue(values, 'voter-removal-delay'),
    '--voter-removal-delay',
    (n) => n >= 1 && n <= 86_400,
    'a number of seconds from 1 to 86400',
  );
  const preemptionGap = parseNumber(
    stringValue(values, 'preemption-gap'),
    '--preemption-gap',
    (n) => Number.isInteger(n) && n >= 0 && n <= 101,
    'a whole number from 0 to 101 (101 turns preemption off)',
  );
  const diskBytes = parseMebibytes(stringValue(values, 'disk'), '--disk');
  const devices = parseCounts(stringList(values, 'device'), '--device', true);
  const listen = parseHostPort(stringValue(values, 'listen') ?? defaultListen, '--listen');
  const api = parseHostPort(stringValue(values, 'api') ?? defaultApi, '--api');
  const seeds = stringList(values, 'join').map(parseJoinTarget);
  const logger = createLogger({ level: logLevel });
  const name = stringValue(values, 'name') ?? hostname();
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name))
    throw invalidArgument('--name may hold letters, digits, ".", "_" and "-" (at most 64)');

  const node = await ShoalNode.start(
    {
      dataDir: stringValue(values, 'data-dir') ?? join(homedir(), '.shoal'),
      listen,
      join: seeds,
      clusterKey,
      name,
      cpuMillis: cpu === null ? null : Math.round(cpu * 1000),
      memoryBytes: memory === null ? null : memory * mebibyte,
      diskBytes,
      devices,
      ...(preemptionGap === null ? {} : { preemptionPriorityGap: preemptionGap }),
      labels: parsePairs(stringList(values, 'label'), '--label'),
      dockerSocket: stringValue(values, 'docker-socket') ?? null,
      ...(compactEntries === null ? {} : { compaction: { entriesBeforeCompaction: compactEntries } }),
      ...(removalDelayS === null
        ? {}
        : { voterPolicy: { ...defaultVoterPolicy, deadVoterRemovalMs: Math.round(removalDelayS * 1000) } }),
    },
    logger,
  );
  let server;
  try {
    server = await startApiServer(node, api.host, api.port, logger.child('api'));
  } catch (error) {
    await node.stop();
    throw error;
  }
  logger.info('agent started', { name, id: node.id, listen: node.joinAddress, api: formatHostPort(api) });
  process.stdout.write(
    `shoal agent ${name} is up. To join another node to this cluster, run there:\n` +
      `  shoal agent --join ${node.joinAddress} --key ${node.clusterKey}\n`,
  );
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info(`stopping on ${signal}`);
    server.close();
    void node
      .leave(5000)
      .catch(() => undefined)
      .then(() => node.stop())
      .finally(() => process.exit(0));
  };
  node.onLeaveRequested = () => shutdown('shoal leave');
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

/** --restart never|on-failure|always, --max-restarts N, --restart-delay SECONDS. */
function restartFlags(values: Record<string, unknown>): { restart?: RestartSpec } {
  const policy = stringValue(values, 'restart');
  const max = stringValue(values, 'max-restarts');
  const delay = stringValue(values, 'restart-delay');
  if (policy === undefined) {
    if (max !== undefined || delay !== undefined)
      throw invalidArgument('--max-restarts and --restart-delay need --restart on-failure or always');
    return {};
  }
  if (!(restartPolicies as readonly string[]).includes(policy)) {
    throw invalidArgument(`--restart ${JSON.stringify(policy)} is unknown; use never, on-failure or always`);
  }
  const maxRestarts = parseNumber(
    max,
    '--max-restarts',
    (n) => Number.isInteger(n) && n >= 0,
    'a whole number',
  );
  const delaySeconds = parseNumber(
    delay,
    '--restart-delay',
    (n) => n >= 0 && n <= 300,
    'a number of seconds from 0 to 300',
  );
  return {
    restart: {
      policy: policy as RestartSpec['policy'],
      // on-failure gives up after 3 restarts unless told otherwise; always keeps going.
      maxRestarts: maxRestarts ?? (policy === 'on-failure' ? 3 : null),
      delayMs: Math.round((delaySeconds ?? 1) * 1000),
    },
  };
}

function defaultTaskName(image: string | undefined, command: readonly string[]): string {
  const base = image !== undefined ? basename(image.split(':')[0] ?? 'task') : basename(command[0] ?? 'task');
  return base.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '') || 'task';
}

/** --replicas N (default 1). */
function replicaCount(values: Record<string, unknown>): number {
  return (
    parseNumber(
      stringValue(values, 'replicas'),
      '--replicas',
      (n) => Number.isInteger(n) && n >= 1 && n <= replicasMax,
      `a whole number from 1 to ${replicasMax}`,
    ) ?? 1
  );
}

export function buildSpec(values: Record<string, unknown>, command: string[]): TaskSpec {
  const driver = stringValue(values, 'driver') ?? 'exec';
  const image = stringValue(values, 'image');
  const cpu = parseNumber(
    stringValue(values, 'cpu') ?? '0.1',
    '--cpu',
    (n) => n > 0 && n <= 1000,
    'a positive number of cores (e.g. 0.5)',
  );
  const memory = parseNumber(
    stringValue(values, 'memory') ?? '64',
    '--memory',
    (n) => Number.isInteger(n) && n > 0,
    'a positive whole number of MiB',
  );
  const priority = parseNumber(
    stringValue(values, 'priority') ?? String(priorityDefault),
    '--priority',
    (n) => Number.isInteger(n) && n >= 0 && n <= 100,
    'a whole number from 0 to 100',
  );
  if (driver !== 'exec' && driver !== 'docker')
    throw invalidArgument(`--driver ${JSON.stringify(driver)} is unknown; use exec or docker`);
  const candidate = {
    name: stringValue(values, 'name') ?? defaultTaskName(image, command),
    driver,
    command,
    ...(image === undefined ? {} : { image }),
    cpuMillis: Math.round((cpu ?? 0.1) * 1000),
    memoryBytes: (memory ?? 64) * mebibyte,
    priority: priority ?? priorityDefault,
    env: parsePairs(stringList(values, 'env'), '--env'),
    ...placementSpec({
      disk: stringValue(values, 'disk'),
      devices: stringList(values, 'device'),
      ports: stringList(values, 'port'),
      namespace: stringValue(values, 'namespace'),
      constraints: stringList(values, 'constraint'),
      affinities: stringList(values, 'affinity'),
      avoid: stringList(values, 'avoid'),
      // Replicas are one job, named after the task unless --job says otherwise.
      job:
        stringValue(values, 'job') ??
        (replicaCount(values) > 1
          ? (stringValue(values, 'name') ?? defaultTaskName(image, command))
          : undefined),
      maxRunning: stringValue(values, 'max-running'),
      distinctNodes: values['distinct-nodes'] === true,
      spreadOver: stringValue(values, 'spread-over'),
      spread: values['spread'] === true,
      notPreemptible: values['not-preemptible'] === true,
      onDisconnect: stringValue(values, 'on-disconnect'),
    }),
    ...restartFlags(values),
  };
  const parsed = taskSpecSchema.safeParse(candidate);
  if (!parsed.success) throw invalidArgument(describeIssues(parsed.error));
  return parsed.data;
}

async function run(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...addrOption,
      name: { type: 'string' },
      cpu: { type: 'string' },
      memory: { type: 'string' },
      priority: { type: 'string' },
      driver: { type: 'string' },
      image: { type: 'string' },
      env: { type: 'string', multiple: true },
      constraint: { type: 'string', multiple: true },
      restart: { type: 'string' },
      'max-restarts': { type: 'string' },
      'restart-delay': { type: 'string' },
      disk: { type: 'string' },
      device: { type: 'string', multiple: true },
      port: { type: 'string', multiple: true },
      namespace: { type: 'string' },
      affinity: { type: 'string', multiple: true },
      avoid: { type: 'string', multiple: true },
      replicas: { type: 'string' },
      gang: { type: 'boolean' },
      job: { type: 'string' },
      'max-running': { type: 'string' },
      'distinct-nodes': { type: 'boolean' },
      'spread-over': { type: 'string' },
      spread: { type: 'boolean' },
      'not-preemptible': { type: 'boolean' },
      'on-disconnect': { type: 'string' },
      detach: { type: 'boolean', short: 'd' },
    },
    true,
  );
  if (values['help'] === true) {
    console.log(usage);
    return 0;
  }
  const spec = buildSpec(values, positionals);
  const replicas = replicaCount(values);
  const gang = values['gang'] === true;
  if (gang && replicas < 2) throw invalidArgument('--gang needs --replicas 2 or more');
  const client = new ApiClient(apiAddress(values));
  process.stderr.write(`submitting ${spec.name} to ${client.address}…\n`);
  // The id is chosen here, so a submission whose outcome was not heard (a failover, a timeout) can be
  // sent again: the log accepts an id once.
  const taskId = randomBytes(6).toString('hex');
  const query = `?id=${taskId}${replicas > 1 ? `&replicas=${replicas}${gang ? '&gang=true' : ''}` : ''}`;
  const deadlineMs = Date.now() + submitRetryMs;
  let answer: { id: string; ids?: string[] };
  for (;;) {
    try {
      answer = await client.post<{ id: string; ids?: string[] }>(`/v1/tasks${query}`, spec);
      break;
    } catch (error) {
      const retryable =
        error instanceof ShoalError && ['NO_LEADER', 'NOT_LEADER', 'TIMEOUT'].includes(error.code);
      if (!retryable || Date.now() >= deadlineMs) {
        if (error instanceof ShoalError && error.code === 'TIMEOUT')
          throw new ShoalError('TIMEOUT', `${error.message}; check with shoal ps for task ${taskId}`);
        throw error;
      }
      process.stderr.write(`${error.message.split(';')[0] ?? ''}; sending task ${taskId} again…\n`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
  const { id, ids } = answer;
  const all = ids ?? [id];
  if (all.length === 1) process.stderr.write(`committed by a quorum: task ${id}\n`);
  else process.stderr.write(`committed by a quorum: ${all.length} tasks of job ${spec.job ?? spec.name}\n`);
  process.stdout.write(`${all.join('\n')}\n`);
  // Several replicas are followed with shoal ps; one task is watched until it runs or ends.
  if (values['detach'] === true || all.length > 1) return 0;
  return watchStart(client, id);
}

/** How often `shoal run` looks at its task while it waits for it to start. */
const runPollIntervalMs = 250;
/** `shoal run` gives up watching (the task goes on) after the API has failed this long in a row. */
const runUnreachableMsMax = 30_000;

/**
 * Prints a task's events as they appear until it runs or ends, then its state. The exit code says whether it
 * started: 0 when running or finished, 1 when it failed, was killed or was lost. Ctrl-C stops watching only.
 */
async function watchStart(client: ApiClient, id: string): Promise<number> {
  const printed = new Set<string>();
  let failingSinceMs: number | null = null;
  for (;;) {
    let task: TaskDetailView;
    try {
      task = await client.get<TaskDetailView>(`/v1/tasks/${encodeURIComponent(id)}`);
      failingSinceMs = null;
    } catch (error) {
      // A leader change makes reads fail for a moment; only a long outage ends the watch.
      failingSinceMs ??= Date.now();
      if (Date.now() - failingSinceMs > runUnreachableMsMax) throw error;
      await new Promise((resolve) => setTimeout(resolve, runPollIntervalMs));
      continue;
    }
    for (const event of task.events) {
      const key = `${event.at} ${event.message}`;
      if (printed.has(key)) continue;
      printed.add(key);
      process.stderr.write(`  ${event.at.slice(11, 23)}  ${event.message}\n`);
    }
    if (task.state === 'running') {
      process.stderr.write(`task ${id} is running on ${task.node ?? 'a node'}\n`);
      return 0;
    }
    if (['finished', 'failed', 'killed', 'lost'].includes(task.state)) {
      const exit =
        task.exitCode === null || task.reason?.includes('exit code') === true
          ? ''
          : `, exit code ${task.exitCode}`;
      process.stderr.write(
        `task ${id} ${task.state}${task.reason === null ? '' : `: ${task.reason}`}${exit}\n`,
      );
      return task.state === 'finished' ? 0 : 1;
    }
    await new Promise((resolve) => setTimeout(resolve, runPollIntervalMs));
  }
}

async function inspect(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { ...addrOption, json: { type: 'boolean' } }, true);
  if (values['help'] === true) {
    console.log(usage);
    return;
  }
  const id = positionals[0];
  if (id === undefined || positionals.length > 1)
    throw invalidArgument('usage: shoal inspect ID (one task id, from shoal ps)');
  const task = await new ApiClient(apiAddress(values)).get<TaskDetailView>(
    `/v1/tasks/${encodeURIComponent(id)}`,
  );
  if (values['json'] === true) return writeJson(task);
  const what =
    task.driver === 'docker' ? `${task.image ?? ''} ${task.command.join(' ')}` : task.command.join(' ');
  process.stdout.write(
    `task:     ${task.id} (${task.name})\n` +
      `state:    ${task.state}${task.exitCode === null ? '' : `, exit code ${task.exitCode}`}\n` +
      `reason:   ${task.reason ?? '-'}\n` +
      `node:     ${task.node ?? '-'}\n` +
      `attempt:  ${task.attempt} (restart ${task.restart})\n` +
      `runs:     ${task.driver}: ${what.trim()}\n` +
      `limits:   ${task.cpu} CPU, ${task.memory} MiB, priority ${task.priority}\n` +
      `events:\n` +
      task.events.map((event) => `  ${event.at}  ${event.message}\n`).join(''),
  );
}

function writeJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return (
    rows
      .map((row) =>
        row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '),
      )
      .join('\n') + '\n'
  );
}

async function ps(args: string[]): Promise<void> {
  const { values } = parse(args, { ...addrOption, json: { type: 'boolean' } }, false);
  if (values['help'] === true) {
    console.log(usage);
    return;
  }
  const tasks = await new ApiClient(apiAddress(values)).get<TaskView[]>('/v1/tasks');
  if (values['json'] === true) return writeJson(tasks);
  const rows = [['ID', 'NAME', 'STATE', 'NODE', 'PRIO', 'EXIT', 'REASON']];
  for (const t of tasks) {
    rows.push([
      t.id,
      t.name,
      t.state,
      t.node ?? '-',
      String(t.priority),
      t.exitCode === null ? '-' : String(t.exitCode),
      t.reason ?? '',
    ]);
  }
  process.stdout.write(table(rows));
}

async function members(args: string[]): Promise<void> {
  const { values } = parse(args, { ...addrOption, json: { type: 'boolean' } }, false);
  if (values['help'] === true) {
    console.log(usage);
    return;
  }
  const list = await new ApiClient(apiAddress(values)).get<MemberView[]>('/v1/members');
  if (values['json'] === true) return writeJson(list);
  const rows = [
    ['NAME', 'ADDRESS', 'STATE', 'CPU', 'MEMORY', 'DRIVERS', 'INCARNATION', 'LAST HEARD', 'LABELS'],
  ];
  for (const m of list) {
    rows.push([
      m.name,
      m.address,
      m.draining ? `${m.state},draining` : m.state,
      String(m.cpu),
      `${m.memory} MiB`,
      m.drivers.join(','),
      String(m.incarnation),
      `${(m.lastHeardMsAgo / 1000).toFixed(1)}s ago`,
      Object.entries(m.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
    ]);
  }
  process.stdout.write(table(rows));
}

async function status(args: string[]): Promise<void> {
  const { values } = parse(args, { ...addrOption, json: { type: 'boolean' } }, false);
  if (values['help'] === true) {
    console.log(usage);
    return;
  }
  const view = await new ApiClient(apiAddress(values)).get<StatusView>('/v1/status');
  if (values['json'] === true) return writeJson(view);
  process.stdout.write(
    `node:         ${view.name} (${view.role})\n` +
      `leader:       ${view.leader?.name ?? 'none'}\n` +
      `term:         ${view.term}\n` +
      `voters:       ${view.voters.map((v) => v.name).join(', ')}\n` +
      `learners:     ${view.learners.map((v) => v.name).join(', ') || '-'}\n` +
      `commit index: ${view.commitIndex}\n`,
  );
}

async function logs(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    { ...addrOption, tail: { type: 'string' }, follow: { type: 'boolean', short: 'f' } },
    true,
  );
  if (values['help'] === true) {
    console.log(usage);
    return 0;
  }
  const id = positionals[0];
  if (id === undefined || positionals.length > 1)
    throw invalidArgument('usage: shoal logs [-f] ID (one task id, from shoal ps)');
  const tail = parseNumber(
    stringValue(values, 'tail'),
    '--tail',
    (n) => Number.isInteger(n) && n >= 0,
    'a whole number of bytes',
  );
  const client = new ApiClient(apiAddress(values));
  const path = `/v1/tasks/${encodeURIComponent(id)}/logs`;
  if (values['follow'] === true) return followLogs(client, path, tail);
  const query = tail === null ? '' : `?tail=${tail}`;
  const output = await client.get<{ stdout: string; stderr: string }>(`${path}${query}`);
  process.stdout.write(output.stdout);
  process.stderr.write(output.stderr);
  return 0;
}

/** Copies a followed task's output to stdout and stderr as it comes, until the task ends (Ctrl-C stops it). */
async function followLogs(client: ApiClient, path: string, tail: number | null): Promise<number> {
  const query = `?follow=1${tail === null ? '' : `&tail=${tail}`}`;
  for await (const value of client.stream(`${path}${query}`)) {
    const frame = value as LogFrameJson;
    if ('data' in frame) {
      const data = Buffer.from(frame.data, 'base64');
      const out = frame.stream === 'stderr' ? process.stderr : process.stdout;
      if (!out.write(data)) await new Promise((resolve) => out.once('drain', resolve));
    } else if ('end' in frame) {
      process.stderr.write(`shoal logs: ${frame.end}\n`);
      return 0;
    } else if ('error' in frame) {
      throw new ShoalError(frame.error.code as ShoalErrorCode, frame.error.message);
    }
  }
  throw new ShoalError(
    'UNAVAILABLE',
    `the log stream from ${client.address} broke off before the task ended`,
  );
}

async function kill(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, addrOption, true);
  if (values['help'] === true) {
    console.log(usage);
    return;
  }
  const id = positionals[0];
  if (id === undefined || positionals.length > 1)
    throw invalidArgument('usage: shoal kill ID (one task id, from shoal ps)');
  await new ApiClient(apiAddress(values)).post(`/v1/tasks/${encodeURIComponent(id)}/kill`, {});
  process.stderr.write(`kill requested for task ${id}\n`);
}

async function drain(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { ...addrOption, cancel: { type: 'boolean' } }, true);
  if (values['help'] === true) {
    console.log(usage);
    return;
  }
  const node = positionals[0];
  if (node === undefined || positionals.length > 1)
    throw invalidArgument('usage: shoal drain NODE [--cancel] (a name from shoal members)');
  const cancel = values['cancel'] === true;
  await new ApiClient(apiAddress(values)).post(`/v1/nodes/${encodeURIComponent(node)}/drain`, {
    drain: !cancel,
  });
  process.stderr.write(
    cancel
      ? `node ${node} takes tasks again\n`
      : `node ${node} is draining: no new tasks, its tasks move elsewhere\n`,
  );
}

async function leave(args: string[]): Promise<void> {
  const { values } = parse(args, addrOption, false);
  if (values['help'] === true) {
    console.log(usage);
    return;
  }
  const client = new ApiClient(apiAddress(values), 120_000);
  process.stderr.write(`draining ${client.address} and leaving the cluster…\n`);
  await client.post('/v1/agent/leave', {});
  process.stderr.write('its tasks have moved; the agent is leaving\n');
}

async function namespace(args: string[]): Promise<void> {
  const { values, positionals } = parse(
    args,
    {
      ...addrOption,
      json: { type: 'boolean' },
      weight: { type: 'string' },
      'quota-cpu': { type: 'string' },
      'quota-memory': { type: 'string' },
      'quota-disk': { type: 'string' },
      'quota-device': { type: 'string', multiple: true },
    },
    true,
  );
  const [action, name, ...extra] = positionals;
  if (values['help'] === true || action === undefined) {
    console.log(usage);
    return;
  }
  const client = new ApiClient(apiAddress(values));
  if (action === 'ls' && name === undefined) {
    const list = await client.get<NamespacePolicySpec[]>('/v1/namespaces');
    if (values['json'] === true) return writeJson(list);
    const rows = [['NAMESPACE', 'WEIGHT', 'QUOTA']];
    for (const policy of list) rows.push([policy.name, String(policy.weight), formatQuota(policy.quota)]);
    process.stdout.write(table(rows));
    return;
  }
  if (action !== 'set' || name === undefined || extra.length > 0)
    throw invalidArgument('use shoal namespace ls, or shoal namespace set NAME [--weight W] [--quota-…]');
  const weight = parseNumber(
    stringValue(values, 'weight') ?? '1',
    '--weight',
    (n) => n > 0 && n <= 1_000_000,
    'a positive number',
  );
  const cpu = parseNumber(
    stringValue(values, 'quota-cpu'),
    '--quota-cpu',
    (n) => n >= 0,
    'a number of cores',
  );
  const memoryBytes = parseMebibytes(stringValue(values, 'quota-memory'), '--quota-memory');
  const diskBytes = parseMebibytes(stringValue(values, 'quota-disk'), '--quota-disk');
  const devices = parseCounts(stringList(values, 'quota-device'), '--quota-device', true);
  const quota = {
    ...(cpu === null ? {} : { cpuMillis: Math.round(cpu * 1000) }),
    ...(memoryBytes === null ? {} : { memoryBytes }),
    ...(diskBytes === null ? {} : { diskBytes }),
    ...(Object.keys(devices).length === 0 ? {} : { devices }),
  };
  const policy = await client.put<NamespacePolicySpec>(`/v1/namespaces/${encodeURIComponent(name)}`, {
    weight: weight ?? 1,
    quota: Object.keys(quota).length === 0 ? null : quota,
  });
  process.stdout.write(
    `namespace ${policy.name}: weight ${policy.weight}, quota ${formatQuota(policy.quota)}\n`,
  );
}

function formatQuota(quota: NamespacePolicySpec['quota']): string {
  if (quota === null) return 'none';
  const parts: string[] = [];
  if (quota.cpuMillis !== undefined) parts.push(`cpu ${quota.cpuMillis / 1000}`);
  if (quota.memoryBytes !== undefined) parts.push(`memory ${Math.floor(quota.memoryBytes / mebibyte)} MiB`);
  if (quota.diskBytes !== undefined) parts.push(`disk ${Math.floor(quota.diskBytes / mebibyte)} MiB`);
  for (const [kind, count] of Object.entries(quota.devices ?? {})) parts.push(`${kind} ${count}`);
  return parts.join(', ') || 'none';
}

/** A command resolves to its exit code, or to nothing for 0. */
const commands: Record<string, (args: string[]) => Promise<unknown>> = {
  agent,
  run,
  ps,
  inspect,
  logs,
  kill,
  members,
  status,
  drain,
  leave,
  namespace,
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    console.log(usage);
    return command === undefined ? 2 : 0;
  }
  if (command === 'version' || command === '--version') {
    console.log(shoalVersion);
    return 0;
  }
  const handler = commands[command];
  if (!handler) {
    process.stderr.write(`shoal: unknown command ${JSON.stringify(command)}; see shoal --help\n`);
    return 2;
  }
  try {
    const exitCode = await handler(rest);
    return typeof exitCode === 'number' ? exitCode : 0;
  } catch (error) {
    const message = error instanceof ShoalError ? error.message : `unexpected error: ${errorMessage(error)}`;
    process.stderr.write(`shoal ${command}: ${message.split('\n')[0] ?? message}\n`);
    if (!(error instanceof ShoalError) && process.env['SHOAL_DEBUG'] !== undefined) console.error(error);
    return error instanceof ShoalError && error.code === 'INVALID_ARGUMENT' ? 2 : 1;
  }
}
