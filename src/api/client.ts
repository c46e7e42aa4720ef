/** The CLI's side of the HTTP API. Errors come back as ShoalError with the server's code and message. */
import { ShoalError, errorMessage, type ShoalErrorCode } from '../shared/errors.ts';

export class ApiClient {
  readonly address: string;
  private readonly timeoutMs: number;

  constructor(address: string, timeoutMs = 30_000) {
    this.address = address;
    this.timeoutMs = timeoutMs;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path, undefined);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('POST', path, body);
  }

  put<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PUT', path, body);
  }

  /**
   * GETs a streaming route: yields each line of the newline-delimited JSON answer as it arrives, with no overall
   * timeout (only the connection must be made within it). An error answer before the stream throws like get().
   */
  async *stream(path: string, signal?: AbortSignal): AsyncGenerator<unknown, void, undefined> {
    const connected = new AbortController();
    const timer = setTimeout(() => connected.abort(), this.timeoutMs);
    let response: Response;
    try {
      response = await fetch(`http://${this.address}${path}`, {
        signal: signal === undefined ? connected.signal : AbortSignal.any([signal, connected.signal]),
      });
    } catch (error) {
      throw this.unreachable(error);
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok || response.body === null) {
      await this.parse(response, await response.text());
      return;
    }
    const decoder = new TextDecoder();
    const reader = response.body.getReader();
    let buffered = '';
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        buffered += decoder.decode(value, { stream: true });
        let newline = buffered.indexOf('\n');
        while (newline >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          if (line !== '') yield JSON.parse(line) as unknown;
          newline = buffered.indexOf('\n');
        }
      }
    } finally {
      // Left early: close the connection, which ends the follow on the server.
      await reader.cancel().catch(() => undefined);
    }
  }

  private async request<T>(method: string, path: string, body: unknown): Promise<T> {
    let response: Response;
    try {
      response = await fetch(`http://${this.address}${path}`, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? null : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      throw this.unreachable(error);
    }
    return this.parse(response, await response.text()) as T;
  }

  private unreachable(error: unknown): ShoalError {
    const cause =
      error instanceof Error && error.cause instanceof Error ? error.cause.message : errorMessage(error);
    return new ShoalError(
      'UNAVAILABLE',
      `cannot reach shoal at ${this.address} (${cause}); is \`shoal agent\` running there? Point at a node with --addr HOST:PORT or SHOAL_ADDR`,
    );
  }

  private parse(response: Response, text: string): unknown {
    let payload: unknown;
    try {
      payload = JSON.parse(text);
    } catch {
      throw new ShoalError(
        'INTERNAL',
        `${this.address} answered ${response.status} with something that is not shoal's JSON`,
      );
    }
    if (!response.ok) {
      const error = (payload as { error?: { code?: string; message?: string } }).error;
      throw new ShoalError(
        (error?.code ?? 'INTERNAL') as ShoalErrorCode,
        error?.message ?? `HTTP ${response.status}`,
      );
    }
    return payload;
  }
}
