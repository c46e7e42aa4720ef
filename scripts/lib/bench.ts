/** Small helpers the benchmark scripts share: one agent, free ports, the HTTP API, percentiles. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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

/** Calls a node's HTTP API; throws with the server's error body on a non-2xx answer. */
export async function api<T>(
  address: string,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 15_000,
): Promise<T> {
  const response = await fetch(`http://${address}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? null : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const payload = (await response.json()) as T;
  if (!response.ok) throw new Error(`${method} ${path}: ${JSON.stringify(payload)}`);
  return payload;
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
  for (let attempt = 0; ; attempt++) {
    const status = await api<{ role?: string }>(apiAddress, 'GET', '/v1/status').catch(() => null);
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
