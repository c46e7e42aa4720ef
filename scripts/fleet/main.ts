/**
 * The fleet simulator's process (see fleet.ts): `node scripts/fleet/main.ts --nodes N --seeds HOST:PORT,…
 * --events-api ADDRESS,… --key-file FILE [--token-file FILE] …`. It prints one JSON object per line on
 * stdout: `{"ready":…}` once every node's record is in the cluster, then `{"stats":…}` every second; it
 * takes JSON lines on stdin: `{"crash":true}` crashes the node running the most tasks (or `{"crash":"ID"}`
 * that one) and answers `{"crashed":{id,name,tasks,atMs}}`; `{"stop":true}` or SIGTERM stops it.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { createLogger } from '../../src/shared/log.ts';
import { Fleet } from './fleet.ts';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '100' },
    seeds: { type: 'string' },
    'events-api': { type: 'string' },
    'key-file': { type: 'string' },
    'token-file': { type: 'string' },
    prefix: { type: 'string', default: 'sim' },
    'cpu-millis': { type: 'string', default: '32000' },
    'memory-mib': { type: 'string', default: '131072' },
    racks: { type: 'string', default: '5' },
    'start-delay-ms': { type: 'string', default: '20,200' },
    'run-ms': { type: 'string' },
    'fail-ratio': { type: 'string', default: '0' },
    'oom-ratio': { type: 'string', default: '0' },
    seed: { type: 'string', default: '1' },
    'log-level': { type: 'string', default: 'warn' },
  },
});

function required(name: string, value: string | undefined): string {
  if (value === undefined || value === '') {
    console.error(`fleet: --${name} is required`);
    process.exit(2);
  }
  return value;
}

function number(name: string, value: string | undefined, min: number, max: number): number {
  const parsed = Number(value);
  if (value === undefined || !Number.isFinite(parsed) || parsed < min || parsed > max) {
    console.error(`fleet: --${name} must be a number from ${min} to ${max}, not ${String(value)}`);
    process.exit(2);
  }
  return parsed;
}

const [delayMin, delayMax] = values['start-delay-ms'].split(',');
const level = values['log-level'] === 'debug' ? 'debug' : values['log-level'] === 'info' ? 'info' : 'warn';
const fleet = new Fleet({
  clusterKey: readFileSync(required('key-file', values['key-file']), 'utf8').trim(),
  seeds: required('seeds', values.seeds).split(','),
  eventApis: required('events-api', values['events-api']).split(','),
  ...(values['token-file'] === undefined ? {} : { token: readFileSync(values['token-file'], 'utf8').trim() }),
  nodes: number('nodes', values.nodes, 1, 10_000),
  namePrefix: values.prefix,
  cpuMillis: number('cpu-millis', values['cpu-millis'], 1, 10_000_000),
  memoryBytes: number('memory-mib', values['memory-mib'], 1, 2 ** 30) * 1024 * 1024,
  racks: number('racks', values.racks, 1, 1000),
  startDelayMs: {
    min: number('start-delay-ms', delayMin, 0, 600_000),
    max: number('start-delay-ms', delayMax ?? delayMin, 0, 600_000),
  },
  runMs: values['run-ms'] === undefined ? null : number('run-ms', values['run-ms'], 0, 86_400_000),
  failRatio: number('fail-ratio', values['fail-ratio'], 0, 1),
  oomRatio: number('oom-ratio', values['oom-ratio'], 0, 1),
  seed: number('seed', values.seed, 0, 2 ** 31),
  logger: createLogger({ level, component: 'fleet' }),
});

const print = (value: unknown): void => {
  process.stdout.write(`${JSON.stringify(value)}\n`);
};

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await fleet.stop();
  process.exit(0);
}

process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());

const startedMs = Date.now();
await fleet.start();
print({ ready: { nodes: values.nodes, startMs: Date.now() - startedMs } });
setInterval(() => {
  print({ stats: { atMs: Date.now(), ...fleet.stats(), rssBytes: process.memoryUsage.rss() } });
}, 1000);

const input = createInterface({ input: process.stdin });
input.on('line', (line) => {
  let command: unknown;
  try {
    command = JSON.parse(line);
  } catch {
    print({ error: `not JSON: ${line}` });
    return;
  }
  if (typeof command !== 'object' || command === null) return;
  if ('crash' in command) {
    const target = typeof command.crash === 'string' ? command.crash : undefined;
    print({ crashed: { ...fleet.crash(target), atMs: Date.now() } });
  } else if ('stop' in command) {
    void stop();
  }
});
