/**
 * The dashboard's client of the HTTP API: the token (kept in localStorage, sent as a Bearer token with every
 * call), JSON requests with a timeout, errors as ApiError with the server's code and message, and a reader
 * of newline-delimited JSON streams (events, followed logs). EventSource cannot send headers, so streams are
 * read with fetch() and a ReadableStream reader.
 */

const tokenKey = 'shoal.token';
/** A request that has not answered in this long is abandoned (a stream: until its answer begins). */
const requestTimeoutMs = 20_000;

export function storedToken(): string | null {
  try {
    return localStorage.getItem(tokenKey);
  } catch {
    return null;
  }
}

export function saveToken(token: string): void {
  localStorage.setItem(tokenKey, token);
}

export function clearToken(): void {
  localStorage.removeItem(tokenKey);
}

/** An answer other than 2xx, or no answer at all (status 0). */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** The text to show for any failure. */
export function errorText(error: unknown): string {
  if (error instanceof ApiError)
    return error.status === 0 ? error.message : `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}

let unauthorized: (message: string) => void = () => undefined;

/** What to do when the server answers 401 (the token is unknown, revoked or expired): back to the login. */
export function onUnauthorized(handler: (message: string) => void): void {
  unauthorized = handler;
}

interface RequestOptions {
  readonly method?: 'GET' | 'POST' | 'PUT' | 'DELETE';
  readonly body?: unknown;
  readonly signal?: AbortSignal;
  /** The token to send instead of the stored one (the login page tries one before keeping it). */
  readonly token?: string;
  /** Abandon the request after requestTimeoutMs (default true; streams abort with their own signal). */
  readonly timeout?: boolean;
}

/** Sends one request; answers the response when it is 2xx, throws ApiError otherwise. */
export async function request(path: string, options: RequestOptions = {}): Promise<Response> {
  const token = options.token ?? storedToken() ?? '';
  const signals = [
    options.signal,
    options.timeout === false ? undefined : AbortSignal.timeout(requestTimeoutMs),
  ];
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(path, {
      method: options.method ?? 'GET',
      headers,
      cache: 'no-store',
      signal: AbortSignal.any(signals.filter((s): s is AbortSignal => s !== undefined)),
      ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
    });
  } catch (error) {
    if (options.signal?.aborted === true) throw error;
    const timedOut = error instanceof DOMException && error.name === 'TimeoutError';
    throw new ApiError(
      0,
      'UNREACHABLE',
      timedOut ? 'the node did not answer in time' : 'the node cannot be reached',
    );
  }
  if (response.ok) return response;
  let code = `HTTP_${response.status}`;
  let message = response.statusText || 'request failed';
  try {
    const body = (await response.json()) as { error?: { code?: unknown; message?: unknown } };
    if (typeof body.error?.code === 'string') code = body.error.code;
    if (typeof body.error?.message === 'string') message = body.error.message;
  } catch {
    // Not the API's JSON error (a proxy's page, say): the status line says enough.
  }
  // A request aborted while its error was read (the page went away) says nothing more.
  if (options.signal?.aborted === true) throw new ApiError(response.status, code, message);
  if (response.status === 401 && options.token === undefined) unauthorized(message);
  throw new ApiError(response.status, code, message);
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  const response = await request(path, signal === undefined ? {} : { signal });
  return (await response.json()) as T;
}

export async function postJson<T>(path: string, body: unknown): Promise<T> {
  const response = await request(path, { method: 'POST', body });
  return (await response.json()) as T;
}

/**
 * Reads a response body of newline-delimited JSON until it ends, calling onLine with each parsed line (a
 * line that is not JSON is skipped). Resolves when the stream ends; rejects when it breaks or aborts.
 */
export async function readLines(response: Response, onLine: (value: unknown) => void): Promise<void> {
  const body = response.body;
  if (body === null) return;
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line !== '') parseAndCall(line, onLine);
        newline = buffered.indexOf('\n');
      }
    }
    const rest = (buffered + decoder.decode()).trim();
    if (rest !== '') parseAndCall(rest, onLine);
  } finally {
    reader.releaseLock();
  }
}

function parseAndCall(line: string, onLine: (value: unknown) => void): void {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return;
  }
  onLine(value);
}

/** Waits `ms`, or less when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
