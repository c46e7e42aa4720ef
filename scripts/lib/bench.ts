/** Small helpers the benchmark scripts share: one agent, free ports, the HTTP API, percentiles. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ShoalClient } from '../../src/api/index.ts';

export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => done(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

/**
 * The API client for a node (one per address and timeout, so connections are kept alive between calls).
 * Errors are ShoalErrors with the server's code and message.
 */
export function client(address: string, timeoutMs = 15_000): ShoalClient {
  const key = `${address}/${timeoutMs}`;
  let known = clients.get(key);
  if (!known) {
    const credentials = tokens.get(address);
    known = new ShoalClient({
      // An API that speaks TLS is called over https, trusting only the cluster's CA.
      address: credentials?.ca === undefined ? address : `https://${address}`,
      timeoutMs,
      ...(credentials === undefined ? {} : { token: credentials.token }),
      ...(credentials?.ca === undefined ? {} : { ca: credentials.ca }),
    });
    clients.set(key, known);
  }
  return known;
}

const clients = new Map<string, ShoalClient>();
/**
 * The token each API address is called with (benchmarks go through TCP, as a remote client would), and
 * the CA of one that speaks TLS.
 */
const tokens = new Map<string, { readonly token: string; readonly ca?: string }>();

/** Calls to `addresses` send this token from now on (over TLS, trusting `ca`, when given one). */
export function useToken(token: string, addresses: readonly string[], ca?: string): void {
  for (const address of addresses) tokens.set(address, { token, ...(ca === undefined ? {} : { ca }) });
}

/**
 * The cluster's first admin token, which the node that made the cluster writes to its data dir once it
 * is committed (src/node/node.ts); waits for it up to timeoutMs.
 */
export async function managementToken(dataDir: string, timeoutMs = 30_000): Promise<string> {
  const path = join(dataDir, 'management.token');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (existsSync(path)) return readFileSync(path, 'utf8').trim();
    if (Date.now() > deadline) throw new Error(`no ${path} within ${timeoutMs / 1000} s`);
    await new Promise((done) => setTimeout(done, 50));
  }
}

/** Closes every client's kept-alive connections, so the benchmark's process can exit. */
export function closeClients(): void {
  for (const known of clients.values()) known.close();
  clients.clear();
}

/** The p-th percentile (0–100) of ascending samples, nearest-rank. */
export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

export interface BenchAgent {
  readonly process: ChildProcess;
  readonly apiAddress: string;
  readonly dataDir: string;
  /** SIGTERM (the agent stops its tasks), wait for the exit, remove the data dir. */
  stop(): Promise<void>;
}

/**
 * Starts a lone agent of `binary` on loopback with a fresh data dir, and resolves once it leads (a lone
 * agent elects itself; it takes submissions from then on).
 */
export async function startBenchAgent(options: {
  readonly binary: string;
  readonly name: string;
  readonly cpu: number;
  readonly memoryMiB: number;
  /** The Docker engine's socket, or null for exec only. */
  readonly dockerSocket: string | null;
  /** More `shoal agent` flags. */
  readonly extraArgs?: readonly string[];
}): Promise<BenchAgent> {
  const dataDir = mkdtempSync(join(tmpdir(), `shoal-bench-${options.name}-`));
  const apiAddress = `127.0.0.1:${await freePort()}`;
  const child = spawn(
    options.binary,
    [
      'agent',
      '--data-dir',
      dataDir,
      '--name',
      options.name,
      '--listen',
      `127.0.0.1:${await freePort()}`,
      '--api',
      apiAddress,
      '--cpu',
      String(options.cpu),
      '--memory',
      String(options.memoryMiB),
      '--docker-socket',
      options.dockerSocket ?? '/nonexistent',
      ...(options.extraArgs ?? []),
    ],
    { stdio: ['ignore', 'ignore', 'ignore'] },
  );
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((done) => child.once('exit', done));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    useToken(await managementToken(dataDir), [apiAddress]);
  } catch (error) {
    await stop();
    throw error;
  }
  for (let attempt = 0; ; attempt++) {
    const status = await client(apiAddress)
      .status()
      .catch(() => null);
    if (status?.role === 'leader') break;
    if (attempt > 300) {
      await stop();
      throw new Error(`the ${options.name} agent did not become leader within 30 s`);
    }
    await new Promise((done) => setTimeout(done, 100));
  }
  return { process: child, apiAddress, dataDir, stop };
}

/** Exits with a one-line error when the benchmark's binary has not been built. */
export function requireBinary(path: string): void {
  if (!existsSync(path)) {
    console.error(`${path} is missing: run \`npm run build\` first`);
    process.exit(2);
  }
}

/** utime + stime of a process so far, in clock ticks (/proc/PID/stat; 100 a second here). */
export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** A KiB field of /proc/PID/status (VmRSS, VmHWM …). */
export function statusKiB(pid: number, field: string): number {
  const match = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match?.[1] ?? NaN);
}
