/**
 * `shoal agent`: runs a node. Its flags become a NodeConfig here; starting the node and its API, the join
 * hint, signals and `shoal leave` are the node's process (node/process.ts).
 */
import { readFileSync, statSync, type Stats } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import {
  dynamicPortRangeDefault,
  liveTaskBytes,
  liveTasksMaxMax,
  liveTasksMaxMin,
  preemptionPriorityGapOff,
  terminalTaskRetentionMsMax,
  terminalTasksRetainedMaxDefault,
  terminalTasksRetainedMaxMax,
  terminalTasksRetainedMaxMin,
} from '../../cluster/index.ts';
import { defaultCompactionPolicy, defaultVoterPolicy } from '../../election/index.ts';
import {
  apiDefault,
  dnsDefault,
  listenDefault,
  nodeNamePattern,
  parseHostPort,
  parseJoinTarget,
  runAgentProcess,
  validateClusterKey,
  type ApiTlsMode,
  type NodeConfig,
} from '../../node/index.ts';
import { createLogger, errorMessage, invalidArgument, kibibyte, mebibyte } from '../../shared/index.ts';
import { defineCommand, type Command } from '../command.ts';
import {
  parseChoice,
  parseCores,
  parseCounts,
  parseDuration,
  parseMebibytes,
  parseNumber,
  parsePairs,
  parseWhole,
  type FlagValues,
} from '../flags.ts';

const logLevels = ['debug', 'info', 'warn', 'error'] as const;
/** --voter-removal-delay's bounds: a dead voter is not removed sooner than 1 s, nor later than a day. */
const voterRemovalDelaySecondsMin = 1;
const voterRemovalDelaySecondsMax = 86_400;

/** `shoal agent`'s flags. */
export const agentOptions = {
  'data-dir': {
    type: 'string',
    value: 'DIR',
    help: 'where the node keeps its keys, Raft log and task directories (default ~/.shoal)',
  },
  listen: { type: 'string', value: 'HOST:PORT', help: `the cluster listener (default ${listenDefault})` },
  api: { type: 'string', value: 'HOST:PORT', help: `where the HTTP API listens (default ${apiDefault})` },
  tls: {
    type: 'string',
    value: 'auto',
    help: "serve the API over TLS with a certificate from the cluster's CA (needed off loopback)",
  },
  'tls-cert': {
    type: 'string',
    value: 'FILE',
    help: "serve the API over TLS with this certificate (PEM, chain) instead of the cluster CA's",
  },
  'tls-key': { type: 'string', value: 'FILE', help: "the key of --tls-cert's certificate (PEM)" },
  join: {
    type: 'string',
    multiple: true,
    value: 'HOST:PORT',
    help: "a member's cluster address to join through (none: start a new cluster)",
  },
  key: { type: 'string', value: 'KEY', help: "the cluster's key, as the first node printed it" },
  'key-file': { type: 'string', value: 'FILE', help: 'read the cluster key from FILE (not with --key)' },
  name: { type: 'string', value: 'NAME', help: "the node's name (default the host name)" },
  cpu: {
    type: 'string',
    value: 'CORES',
    help: "CPU offered to tasks (default: the machine's, less a reserve)",
  },
  memory: {
    type: 'string',
    value: 'MIB',
    help: "memory offered to tasks (default: the machine's, less a reserve)",
  },
  disk: {
    type: 'string',
    value: 'MIB',
    help: "disk offered to tasks (default: the data dir's free space, less a reserve)",
  },
  device: {
    type: 'string',
    multiple: true,
    value: 'KIND=COUNT|FILES',
    help: 'devices offered to tasks: KIND=COUNT, or KIND=FILE,FILE… to bind each to its files (gpu=/dev/nvidia0,/dev/nvidia1)',
  },
  label: { type: 'string', multiple: true, value: 'K=V', help: 'a label tasks can be placed by' },
  'port-range': {
    type: 'string',
    value: 'MIN-MAX',
    help: `host ports given to tasks' dynamic ports (default ${dynamicPortRangeDefault.min}-${dynamicPortRangeDefault.max})`,
  },
  dns: {
    type: 'string',
    value: 'HOST:PORT|off',
    help: `answer DNS for services (NAME.service.shoal) here (default ${dnsDefault})`,
  },
  'docker-socket': {
    type: 'string',
    value: 'PATH',
    help: "the Docker engine's socket (default /var/run/docker.sock)",
  },
  isolation: {
    type: 'string',
    value: 'on|off',
    help: 'run exec tasks as their user in namespaces of their own, the host read-only (default on; needs root)',
  },
  'allow-root-tasks': { type: 'boolean', help: 'let exec tasks run as root (--user root)' },
  'insecure-registry': {
    type: 'string',
    multiple: true,
    value: 'HOST[:PORT]',
    help: "pull exec tasks' images from this registry over plain http (loopback registries always are)",
  },
  'log-level': { type: 'string', value: logLevels.join('|'), help: 'how much the agent logs (default info)' },
  'raft-compact-entries': {
    type: 'string',
    value: 'N',
    help: `compact the Raft log after N applied entries, plus up to half as many again chosen by the node's id so voters do not all snapshot at once (default ${defaultCompactionPolicy.entriesBeforeCompaction})`,
  },
  'voter-removal-delay': {
    type: 'string',
    value: 'SECONDS',
    help: `remove a dead voter after this long (default ${defaultVoterPolicy.deadVoterRemovalMs / 1000})`,
  },
  'preemption-gap': {
    type: 'string',
    value: 'N',
    help: `a task preempts only tasks at least N lower in priority (${preemptionPriorityGapOff}: never)`,
  },
  'live-tasks-max': {
    type: 'string',
    value: 'N',
    help: `live tasks the cluster accepts while this node leads (default: half this machine's memory at ${liveTaskBytes / kibibyte} KiB a task)`,
  },
  'ended-tasks-max': {
    type: 'string',
    value: 'N',
    help: `ended tasks (not a job's) the cluster keeps while this node leads, oldest forgotten first (default ${terminalTasksRetainedMaxDefault})`,
  },
  'ended-task-retention': {
    type: 'string',
    value: 'DURATION|off',
    help: "how long the cluster keeps an ended task (not a job's) while this node leads (default 1h; off: by count only)",
  },
} as const;

export const agentCommand: Command = defineCommand({
  name: 'agent',
  summary: 'run a node: start a cluster, or join one with --join and --key',
  synopsis: ['shoal agent [flags]', 'shoal agent --join HOST:PORT --key KEY [flags]'],
  description:
    'Runs a shoal node in the foreground until SIGTERM, SIGINT or shoal leave. Without --join it starts a\n' +
    'new cluster (or restarts a member of one from its data dir) and prints how to join it.',
  options: agentOptions,
  allowPositionals: false,
  run: async ({ values }) => {
    const level = parseChoice(values['log-level'], '--log-level', logLevels) ?? 'info';
    const config = agentConfig(values);
    const api = parseHostPort(values.api ?? apiDefault, '--api');
    await runAgentProcess({
      config,
      api,
      tls: apiTlsMode(values),
      logger: createLogger({ level }),
      write: (text) => process.stdout.write(text),
      exit: (code) => process.exit(code),
    });
    return 0;
  },
});

/** The node's configuration from `shoal agent`'s flags; what a flag leaves out the node derives. */
export function agentConfig(values: FlagValues<typeof agentOptions>): NodeConfig {
  const name = values.name ?? hostname();
  if (!nodeNamePattern.test(name))
    throw invalidArgument('--name may hold letters, digits, ".", "_" and "-" (at most 64)');
  const cpuMillis = parseCores(values.cpu, '--cpu');
  const memoryMiB = parseNumber(
    values.memory,
    '--memory',
    (n) => Number.isSafeInteger(n) && n > 0,
    'a positive whole number of MiB',
  );
  const compactEntries = parseWhole(
    values['raft-compact-entries'],
    '--raft-compact-entries',
    2,
    Number.MAX_SAFE_INTEGER,
  );
  const removalDelaySeconds = parseNumber(
    values['voter-removal-delay'],
    '--voter-removal-delay',
    (n) => n >= voterRemovalDelaySecondsMin && n <= voterRemovalDelaySecondsMax,
    `a number of seconds from ${voterRemovalDelaySecondsMin} to ${voterRemovalDelaySecondsMax}`,
  );
  const preemptionGap = parseWhole(values['preemption-gap'], '--preemption-gap', 0, preemptionPriorityGapOff);
  const liveTasksMax = parseWhole(
    values['live-tasks-max'],
    '--live-tasks-max',
    liveTasksMaxMin,
    liveTasksMaxMax,
  );
  const endedTasksMax = parseWhole(
    values['ended-tasks-max'],
    '--ended-tasks-max',
    terminalTasksRetainedMaxMin,
    terminalTasksRetainedMaxMax,
  );
  const retentionMs = endedTaskRetentionMs(values['ended-task-retention']);
  return {
    dataDir: values['data-dir'] ?? join(homedir(), '.shoal'),
    listen: parseHostPort(values.listen ?? listenDefault, '--listen'),
    join: values.join.map(parseJoinTarget),
    clusterKey: clusterKey(values.key, values['key-file']),
    name,
    cpuMillis,
    memoryBytes: memoryMiB === null ? null : memoryMiB * mebibyte,
    diskBytes: parseMebibytes(values.disk, '--disk'),
    ...parseDevices(values.device),
    labels: ownLabels(parsePairs(values.label, '--label')),
    ...portRange(values['port-range']),
    dns: values.dns === 'off' ? null : parseHostPort(values.dns ?? dnsDefault, '--dns'),
    dockerSocket: values['docker-socket'] ?? null,
    execIsolation: (parseChoice(values.isolation, '--isolation', ['on', 'off'] as const) ?? 'on') === 'on',
    allowRootTasks: values['allow-root-tasks'],
    insecureRegistries: values['insecure-registry'].map((entry) => parseRegistryHost(entry)),
    ...(preemptionGap === null ? {} : { preemptionPriorityGap: preemptionGap }),
    ...(liveTasksMax === null ? {} : { liveTasksMax }),
    ...(endedTasksMax === null ? {} : { terminalTasksRetainedMax: endedTasksMax }),
    ...(retentionMs === undefined ? {} : { terminalTaskRetentionMs: retentionMs }),
    ...(compactEntries === null ? {} : { compaction: { entriesBeforeCompaction: compactEntries } }),
    ...(removalDelaySeconds === null
      ? {}
      : {
          voterPolicy: { ...defaultVoterPolicy, deadVoterRemovalMs: Math.round(removalDelaySeconds * 1000) },
        }),
  };
}

/** --ended-task-retention DURATION or off (null: kept by count only); undefined when absent. */
function endedTaskRetentionMs(value: string | undefined): number | null | undefined {
  if (value === undefined) return undefined;
  if (value === 'off') return null;
  try {
    return parseDuration(value, '--ended-task-retention', terminalTaskRetentionMsMax) ?? undefined;
  } catch {
    throw invalidArgument(
      `--ended-task-retention ${JSON.stringify(value)} must be a duration such as 30m, 1h or 7d (at most ${terminalTaskRetentionMsMax / 86_400_000}d), or off`,
    );
  }
}

/** An --insecure-registry entry: a host name or address, with a port or not. */
export function parseRegistryHost(entry: string): string {
  if (!/^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(entry)) {
    throw invalidArgument(
      `--insecure-registry ${JSON.stringify(entry)}: give the registry as HOST or HOST:PORT, without a scheme or path`,
    );
  }
  return entry;
}

/**
 * --device KIND=COUNT, or KIND=FILE,FILE… (absolute paths of character or block devices on this machine,
 * in slot order; the count is how many).
 */
export function parseDevices(pairs: readonly string[]): Pick<NodeConfig, 'devices' | 'deviceFiles'> {
  const counts: string[] = [];
  const deviceFiles: Record<string, string[]> = {};
  for (const pair of pairs) {
    const match = /^([A-Za-z0-9][A-Za-z0-9._-]*)=(\/.*)$/.exec(pair);
    if (match === null) {
      counts.push(pair);
      continue;
    }
    const kind = match[1] ?? '';
    const files = (match[2] ?? '').split(',');
    for (const file of files) {
      const stats = file.startsWith('/') ? statOrNull(file) : null;
      if (stats === null || !(stats.isCharacterDevice() || stats.isBlockDevice()))
        throw invalidArgument(
          `--device ${kind}=…: ${JSON.stringify(file)} is not a device file on this machine (give absolute paths of character or block devices)`,
        );
    }
    if (new Set(files).size !== files.length)
      throw invalidArgument(`--device ${kind}=…: a device file is listed twice`);
    deviceFiles[kind] = files;
  }
  const devices = parseCounts(counts, '--device', true);
  for (const [kind, files] of Object.entries(deviceFiles)) {
    if (kind in devices) throw invalidArgument(`--device ${kind} is given twice`);
    devices[kind] = files.length;
  }
  return { devices, ...(Object.keys(deviceFiles).length === 0 ? {} : { deviceFiles }) };
}

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

/** --port-range MIN-MAX: at least 16 ports, 1024–65535 (below are the host's services'). */
function portRange(text: string | undefined): { dynamicPorts?: { min: number; max: number } } {
  if (text === undefined) return {};
  const match = /^(\d+)-(\d+)$/.exec(text.trim());
  const min = Number(match?.[1]);
  const max = Number(match?.[2]);
  if (!match || min < 1024 || max > 65_535 || max - min + 1 < 16)
    throw invalidArgument(
      `--port-range ${text}: give MIN-MAX, at least 16 ports within 1024-65535 (e.g. ${dynamicPortRangeDefault.min}-${dynamicPortRangeDefault.max})`,
    );
  return { dynamicPorts: { min, max } };
}

/** --tls auto, or --tls-cert with --tls-key, or neither (plain HTTP, which the agent allows on loopback only). */
function apiTlsMode(values: FlagValues<typeof agentOptions>): ApiTlsMode {
  const auto = parseChoice(values.tls, '--tls', ['auto']) !== null;
  const certificateFile = values['tls-cert'];
  const keyFile = values['tls-key'];
  if (auto && (certificateFile !== undefined || keyFile !== undefined))
    throw invalidArgument('give --tls auto, or --tls-cert FILE --tls-key FILE, not both');
  if (auto) return { kind: 'auto' };
  if (certificateFile === undefined && keyFile === undefined) return { kind: 'off' };
  if (certificateFile === undefined || keyFile === undefined)
    throw invalidArgument('--tls-cert FILE and --tls-key FILE go together');
  return { kind: 'files', certificateFile, keyFile };
}

/** --key or --key-file; null: the node reads its data dir's key, or makes one for a new cluster. */
function clusterKey(key: string | undefined, keyFile: string | undefined): string | null {
  if (key !== undefined && keyFile !== undefined) throw invalidArgument('give --key or --key-file, not both');
  if (key !== undefined) return validateClusterKey(key, '--key');
  if (keyFile === undefined) return null;
  let text: string;
  try {
    text = readFileSync(keyFile, 'utf8');
  } catch (error) {
    throw invalidArgument(`cannot read --key-file ${keyFile}: ${errorMessage(error)}`);
  }
  return validateClusterKey(text, `--key-file ${keyFile}`);
}

/** Labels the operator gives; keys starting with "shoal." are the cluster's own (shoal.node.id). */
function ownLabels(labels: Record<string, string>): Record<string, string> {
  const reserved = Object.keys(labels).find((key) => key.startsWith('shoal.'));
  if (reserved !== undefined)
    throw invalidArgument(
      `--label ${reserved}: keys starting with "shoal." are reserved for the cluster's own labels`,
    );
  return labels;
}
