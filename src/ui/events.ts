/**
 * The cluster's event stream (GET /v1/events), read for as long as the dashboard is open: every line goes to
 * the subscribers (pages refetch what they show). On an error line, a broken or silent connection, the
 * stream is opened again after a backoff, from the index of the last line read, so nothing is missed; the
 * node serving the dashboard keeps its stream through a leader failover.
 */
import type { EventFrame } from '../api/index.ts';
import { ApiError, errorText, readLines, request, sleep } from './api.ts';

/**
 * What subscribers get: the stream's own frames, and `resync` (the stream (re)connected and caught up:
 * whatever happened while it was away, refetch).
 */
export type StreamMessage = EventFrame | { readonly type: 'resync' };
/** A cluster event: a frame that is neither the stream's bookkeeping nor an error. */
export type ClusterEvent = Exclude<EventFrame, { type: 'reset' | 'heartbeat' | 'error' }>;

export interface StreamState {
  readonly connected: boolean;
  /** Why it is not connected (the last failure), or null. */
  readonly problem: string | null;
  /** The index of the last line read. */
  readonly index: number | null;
}

const backoffMsMin = 500;
const backoffMsMax = 10_000;
/** The server sends a heartbeat every 10 s when quiet: this long without a line means the connection is dead. */
const silenceMsMax = 35_000;
/** How many events the stream keeps for the Overview. */
const recentMax = 20;

type Listener = (message: StreamMessage) => void;

export class EventStream {
  private readonly listeners = new Set<Listener>();
  private readonly stateListeners = new Set<(state: StreamState) => void>();
  private readonly stop = new AbortController();
  private index: number | null = null;
  private started = false;
  private recentEvents: ClusterEvent[] = [];
  state: StreamState = { connected: false, problem: null, index: null };

  /** The last events read, newest first. */
  get recent(): readonly ClusterEvent[] {
    return this.recentEvents;
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onState(listener: (state: StreamState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    void this.run();
  }

  close(): void {
    this.stop.abort();
  }

  private setState(state: StreamState): void {
    this.state = state;
    for (const listener of this.stateListeners) listener(state);
  }

  private emit(message: StreamMessage): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(message);
      } catch (error) {
        console.error('an event listener failed', error);
      }
    }
  }

  /** A function, not the property: TypeScript would keep its narrowing across the awaits. */
  private stopped(): boolean {
    return this.stop.signal.aborted;
  }

  private async run(): Promise<void> {
    let backoffMs = backoffMsMin;
    while (!this.stop.signal.aborted) {
      const problem = await this.connectOnce(() => {
        backoffMs = backoffMsMin;
      });
      if (this.stopped()) return;
      this.setState({ connected: false, problem, index: this.index });
      // Full jitter: many dashboards reconnecting to a node that came back do not arrive at once.
      await sleep(backoffMs / 2 + (Math.random() * backoffMs) / 2, this.stop.signal);
      backoffMs = Math.min(backoffMs * 2, backoffMsMax);
    }
  }

  /** Reads the stream once, until it ends or breaks; answers why it stopped. */
  private async connectOnce(caughtUp: () => void): Promise<string> {
    const connection = new AbortController();
    const abort = (): void => connection.abort();
    this.stop.signal.addEventListener('abort', abort, { once: true });
    let watchdog = setTimeout(abort, silenceMsMax);
    const outcome = { silent: false, ended: 'the event stream ended' };
    const heard = (): void => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        outcome.silent = true;
        abort();
      }, silenceMsMax);
    };
    let firstHeartbeat = true;
    try {
      // The first time from index 0: the events this node retains, so the Overview has its recent ones.
      const response = await request(`/v1/events?index=${this.index ?? 0}`, {
        signal: connection.signal,
        timeout: false,
      });
      await readLines(response, (value) => {
        heard();
        const frame = value as EventFrame;
        if (typeof frame.type !== 'string') return;
        if ('index' in frame && typeof frame.index === 'number') this.index = frame.index;
        if (frame.type === 'error') {
          outcome.ended = `the event stream stopped: ${frame.error.message}`;
          abort();
          return;
        }
        if (frame.type === 'heartbeat') {
          if (firstHeartbeat) {
            firstHeartbeat = false;
            caughtUp();
            this.setState({ connected: true, problem: null, index: this.index });
            this.emit({ type: 'resync' });
          }
        } else if (frame.type !== 'reset') {
          this.recentEvents = [frame, ...this.recentEvents].slice(0, recentMax);
        }
        // Events read while catching up are history: the resync at the first heartbeat covers them.
        if (!firstHeartbeat || frame.type === 'reset') this.emit(frame);
      });
      return outcome.ended;
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.stop.abort();
      if (outcome.silent) return 'the event stream went silent';
      if (connection.signal.aborted) return outcome.ended;
      return errorText(error);
    } finally {
      clearTimeout(watchdog);
      this.stop.signal.removeEventListener('abort', abort);
    }
  }
}
