/**
 * Clusters of real agents (dist/shoal) on loopback for the benchmarks: start, wait for voters, find the
 * leader, stop. Every agent's API is called with the cluster's first token (see bench.ts useToken).
 * SHOAL_BENCH_LOG_DIR=DIR keeps each agent's log there (DIR/NAME.log), at SHOAL_BENCH_LOG_LEVEL (warn).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ShoalClient } from '../../src/api/index.ts';
import type { TaskSpec } from '../../src/cluster/index.ts';
import { client, freePort, managementToken, useToken } from './bench.ts';

export interface Agent {
  name: string;
  api: string;
  listen: string;
  dataDir: string;
  process: ChildProcess | null;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function until<T>(what: string, probe: () => Promise<T | null>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== null) return value;
    } catch {
      // not yet
    }
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

export function start(binary: string, agent: Agent, extra: string[]): void {
  agent.process = spawn(
    binary,
    [
      'agent',
      '--name',
      agent.name,
      '--data-dir',
      agent.dataDir,
      '--listen',
      agent.listen,
      '--api',
      agent.api,
      '--cpu',
      '4',
      '--memory',
      '4096',
      '--docker-socket',
      '/nonexistent',
      '--log-level',
      process.env['SHOAL_BENCH_LOG_LEVEL'] ?? 'warn',
      ...extra,
    ],
    {
      stdio: [
        'ignore',
        'ignore',
        process.env['SHOAL_BENCH_LOG_DIR'] === undefined
          ? 'ignore'
          : openSync(join(process.env['SHOAL_BENCH_LOG_DIR'], `${agent.name}.log`), 'a'),
      ],
    },
  );
}

export async function stopAll(agents: Agent[]): Promise<void> {
  for (const agent of agents) agent.process?.kill('SIGKILL');
  await sleep(200);
}

/** `size` agents named b1…, the first making the cluster; resolves once all are voters. */
export async function cluster(
  binary: string,
  size: number,
  root: string,
  options: { readonly tls?: boolean; readonly extra?: readonly string[] } = {},
): Promise<Agent[]> {
  const tls = [...(options.tls === true ? ['--tls', 'auto'] : []), ...(options.extra ?? [])];
  const agents: Agent[] = [];
  for (let i = 1; i <= size; i++) {
    agents.push({
      name: `b${i}`,
      api: `127.0.0.1:${await freePort()}`,
      listen: `127.0.0.1:${await freePort()}`,
      dataDir: join(root, `b${i}-${size}`),
      process: null,
    });
  }
  const [first, ...rest] = agents;
  if (!first) throw new Error('no agents');
  start(binary, first, tls);
  const token = await managementToken(first.dataDir);
  // The cluster's CA, from the first agent's socket (its certificate is public; it is what clients pin).
  const ca =
    options.tls === true
      ? await until(
          'the cluster CA',
          async () =>
            (
              await new ShoalClient({
                address: `unix:${join(first.dataDir, 'api.sock')}`,
                keepAlive: false,
              }).call('clusterCa')
            ).certificatePem,
        )
      : undefined;
  useToken(
    token,
    agents.map((agent) => agent.api),
    ca,
  );
  await until('the first agent', () => client(first.api).status());
  const key = readFileSync(join(first.dataDir, 'cluster.key'), 'utf8').trim();
  for (const agent of rest) start(binary, agent, ['--join', first.listen, '--key', key, ...tls]);
  await until(
    `${size} voters`,
    async () => {
      const status = await client(first.api).status();
      return status.voters.length === size ? status : null;
    },
    120_000,
  );
  return agents;
}

export async function leaderOf(agents: Agent[]): Promise<Agent> {
  return until('an agreed leader', async () => {
    const statuses = await Promise.all(agents.map((a) => client(a.api, 2000).status()));
    const name = statuses[0]?.leader?.name;
    if (name === undefined || !statuses.every((s) => s.leader?.name === name)) return null;
    return agents.find((a) => a.name === name) ?? null;
  });
}

/** The benchmarks' task: the smallest exec task; constrain it to a label no node has to keep it pending. */
export function benchTaskSpec(name: string, constraints: Record<string, string> = {}): TaskSpec {
  return {
    name,
    driver: 'exec',
    command: ['true'],
    cpuMillis: 1,
    memoryBytes: 1024 * 1024,
    priority: 50,
    env: {},
    constraints,
  };
}
