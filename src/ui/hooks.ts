/**
 * Hooks the pages share: the hash route, the event stream as context, and useResource, which fetches what a
 * page shows and refetches it (debounced) when the stream says it changed.
 */
import { createContext } from 'preact';
import { useContext, useEffect, useRef, useState } from 'preact/hooks';
import { errorText } from './api.ts';
import type { EventStream, StreamMessage } from './events.ts';

export const StreamContext = createContext<EventStream | null>(null);

export function useStream(): EventStream {
  const stream = useContext(StreamContext);
  if (stream === null) throw new Error('useStream() outside the StreamContext');
  return stream;
}

/** Calls `listener` with every message of the stream while the component is mounted. */
export function useStreamMessages(listener: (message: StreamMessage) => void): void {
  const stream = useStream();
  const latest = useRef(listener);
  latest.current = listener;
  useEffect(() => stream.subscribe((message) => latest.current(message)), [stream]);
}

/** The route: the hash without its '#', split into a path and its query ('#/tasks?state=running'). */
export interface Route {
  readonly path: string;
  readonly query: URLSearchParams;
}

export function currentRoute(): Route {
  const hash = location.hash.replace(/^#/, '') || '/';
  const question = hash.indexOf('?');
  return question < 0
    ? { path: hash, query: new URLSearchParams() }
    : { path: hash.slice(0, question), query: new URLSearchParams(hash.slice(question + 1)) };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const changed = (): void => setRoute(currentRoute());
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  return route;
}

/** How long after an event a resource refetches, so a burst of events costs one request. */
export const refetchDelayMs = 200;

export interface Resource<T> {
  /** The last answer (kept while a refetch fails, so the page does not blank). */
  readonly data: T | null;
  /** Why the last fetch failed, or null. */
  readonly error: string | null;
  /** Fetch again now. */
  readonly reload: () => void;
}

/**
 * What `load` answers, fetched when the component mounts or `key` changes, and again ~200 ms after stream
 * messages that `relevant` picks (and after a reset or a resync, always). One fetch at a time: a change
 * that comes during a fetch is fetched once it is done. A failed fetch is retried at the next heartbeat.
 */
export function useResource<T>(
  key: string,
  load: (signal: AbortSignal) => Promise<T>,
  relevant: (message: StreamMessage) => boolean,
): Resource<T> {
  const [state, setState] = useState<{ key: string; data: T | null; error: string | null }>({
    key,
    data: null,
    error: null,
  });
  const control = useRef<{ reload: () => void; schedule: () => void; failed: boolean } | null>(null);
  const latest = useRef({ load, relevant });
  latest.current = { load, relevant };

  useEffect(() => {
    const stop = new AbortController();
    let running = false;
    let again = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const self = { reload, schedule, failed: false };
    control.current = self;

    function reload(): void {
      if (stop.signal.aborted) return;
      if (running) {
        again = true;
        return;
      }
      running = true;
      again = false;
      latest.current
        .load(stop.signal)
        .then(
          (data) => {
            self.failed = false;
            if (!stop.signal.aborted) setState({ key, data, error: null });
          },
          (error: unknown) => {
            self.failed = true;
            if (!stop.signal.aborted)
              setState((prev) => ({
                key,
                data: prev.key === key ? prev.data : null,
                error: errorText(error),
              }));
          },
        )
        .finally(() => {
          running = false;
          if (again) schedule();
        });
    }
    function schedule(): void {
      if (timer !== undefined || stop.signal.aborted) return;
      timer = setTimeout(() => {
        timer = undefined;
        reload();
      }, refetchDelayMs);
    }
    reload();
    return () => {
      stop.abort();
      clearTimeout(timer);
    };
  }, [key]);

  useStreamMessages((message) => {
    const current = control.current;
    if (current === null) return;
    const wanted =
      message.type === 'reset' ||
      message.type === 'resync' ||
      (message.type === 'heartbeat' && current.failed) ||
      latest.current.relevant(message);
    if (wanted) current.schedule();
  });

  const stale = state.key !== key;
  return {
    data: stale ? null : state.data,
    error: stale ? null : state.error,
    reload: () => control.current?.reload(),
  };
}
