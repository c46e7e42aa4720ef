/** Small helpers the benchmark scripts share: free ports, the HTTP API, percentiles. */
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';

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

/** Exits with a one-line error when the benchmark's binary has not been built. */
export function requireBinary(path: string): void {
  if (!existsSync(path)) {
    console.error(`${path} is missing: run \`npm run build\` first`);
    process.exit(2);
  }
}
