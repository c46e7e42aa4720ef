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
      const cause =
        error instanceof Error && error.cause instanceof Error ? error.cause.message : errorMessage(error);
      throw new ShoalError(
        'UNAVAILABLE',
        `cannot reach shoal at ${this.address} (${cause}); is \`shoal agent\` running there? Point at a node with --addr HOST:PORT or SHOAL_ADDR`,
      );
    }
    const text = await response.text();
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
    return payload as T;
  }
}
