/** #/tasks/ID — one task: its spec and where it stands, its events, and its output as it comes. */
import type { ComponentChildren } from 'preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { TaskDetailView } from '../../api/index.ts';
import type { LogFrameJson } from '../../shared/log-frames.ts';
import { ApiError, errorText, getJson, postJson, readLines, request, sleep } from '../api.ts';
import { ActionButton, ErrorNote, Loading, StateBadge } from '../components.ts';
import { bytes, clock, cpu, isLive } from '../format.ts';
import { html } from '../html.ts';
import { useResource } from '../hooks.ts';

/** The most output kept on the page; older output is dropped from the top. */
const logCharsMax = 512 * 1024;

export function TaskPage(props: { id: string }): ComponentChildren {
  const { id } = props;
  const task = useResource(
    `task:${id}`,
    (signal) => getJson<TaskDetailView>(`/v1/tasks/${encodeURIComponent(id)}`, signal),
    (message) => 'taskId' in message && message.taskId === id,
  );
  const t = task.data;
  return html`<div class="page">
    <h1>Task ${t?.name ?? ''} <span class="muted mono id">${id}</span></h1>
    <${ErrorNote} error=${task.error} />
    ${
      t === null
        ? task.error === null
          ? html`<${Loading} />`
          : null
        : html`<div class="columns">
            <section>
              <h2>Spec and state</h2>
              <dl class="fields" data-testid="task-fields" data-state=${t.state}>
                <dt>State</dt>
                <dd><${StateBadge} state=${t.state} /> <span class="muted">desired: ${t.desired}</span></dd>
                <dt>Node</dt>
                <dd>${t.node ?? '—'}</dd>
                <dt>Reason</dt>
                <dd>${t.reason ?? '—'}</dd>
                <dt>Exit code</dt>
                <dd>${t.exitCode ?? '—'}</dd>
                <dt>Namespace</dt>
                <dd>${t.namespace}</dd>
                <dt>Job</dt>
                <dd>${t.job ?? '—'}</dd>
                <dt>Driver</dt>
                <dd>${t.driver}${t.image === null ? '' : ` · ${t.image}`}</dd>
                <dt>Command</dt>
                <dd class="mono">${t.command.join(' ') || '—'}</dd>
                <dt>CPU</dt>
                <dd>${cpu(t.cpuMillis)}</dd>
                <dt>Memory</dt>
                <dd>${bytes(t.memoryBytes)}</dd>
                <dt>Priority</dt>
                <dd>${t.priority}</dd>
                <dt>Restart</dt>
                <dd>${t.restart} · attempt ${t.attempt}</dd>
                <dt>Ports</dt>
                <dd class="mono">
                  ${t.ports.length === 0 ? '—' : t.ports.map((port) => `${port.name}=${port.address}`).join(', ')}
                </dd>
                <dt>Health</dt>
                <dd data-testid="task-health">
                  ${
                    t.health === null
                      ? '—'
                      : `${t.health.status}${t.health.message === '' ? '' : `: ${t.health.message}`}`
                  }
                </dd>
                <dt>Submitted</dt>
                <dd>${t.submittedAt}</dd>
                <dt>Updated</dt>
                <dd>${t.updatedAt}</dd>
              </dl>
              ${
                isLive(t)
                  ? html`<${ActionButton}
                      label="Kill"
                      testid="kill-button"
                      kind="danger"
                      action=${() => postJson(`/v1/tasks/${encodeURIComponent(id)}/kill`, {})}
                      done=${task.reload}
                    />`
                  : null
              }
            </section>
            <section>
              <h2>Events</h2>
              <ol class="timeline" data-testid="task-events">
                ${t.events.map(
                  (event, i) =>
                    html`<li key=${i} data-testid="task-event">
                      <span class="muted mono" title=${event.at}>${clock(event.at)}</span> ${event.message}
                    </li>`,
                )}
              </ol>
            </section>
          </div>`
    }
    <h2>Output</h2>
    <${Logs} id=${id} />
  </div>`;
}

interface Chunk {
  readonly stream: 'stdout' | 'stderr';
  readonly text: string;
}

function decodeBase64(data: string): Uint8Array {
  const binary = atob(data);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** Appends a chunk, merging it into the last one of the same stream, keeping at most logCharsMax. */
function append(chunks: readonly Chunk[], chunk: Chunk): Chunk[] {
  const last = chunks.at(-1);
  const next =
    last?.stream === chunk.stream
      ? [...chunks.slice(0, -1), { stream: chunk.stream, text: last.text + chunk.text }]
      : [...chunks, chunk];
  let total = next.reduce((sum, c) => sum + c.text.length, 0);
  while (total > logCharsMax && next.length > 0) {
    const first = next[0];
    if (first === undefined) break;
    const drop = Math.min(first.text.length, total - logCharsMax);
    total -= drop;
    if (drop === first.text.length) next.shift();
    else next[0] = { stream: first.stream, text: first.text.slice(drop) };
  }
  return next;
}

/**
 * The task's stdout and stderr, followed (GET /v1/tasks/ID/logs?follow=true) until it ends; a broken stream
 * is opened again from the start of what the node keeps.
 */
function Logs(props: { id: string }): ComponentChildren {
  const [chunks, setChunks] = useState<readonly Chunk[]>([]);
  const [status, setStatus] = useState('connecting…');
  const pre = useRef<HTMLPreElement>(null);
  // The view follows new output while it is scrolled to the bottom; scrolled up, it stays put.
  const stick = useRef(true);
  useLayoutEffect(() => {
    if (stick.current && pre.current !== null) pre.current.scrollTop = pre.current.scrollHeight;
  }, [chunks]);
  const scrolled = (): void => {
    const el = pre.current;
    if (el !== null) stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
  };
  useEffect(() => {
    const stop = new AbortController();
    setChunks([]);
    setStatus('connecting…');
    // A function, not the property: TypeScript would keep its narrowing across the awaits.
    const stopped = (): boolean => stop.signal.aborted;
    async function follow(): Promise<void> {
      let backoffMs = 1000;
      while (!stopped()) {
        const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
        const outcome: { ended: string | null; failure: string | null } = { ended: null, failure: null };
        try {
          const response = await request(`/v1/tasks/${encodeURIComponent(props.id)}/logs?follow=true`, {
            signal: stop.signal,
            timeout: false,
          });
          setChunks([]);
          setStatus('following');
          await readLines(response, (value) => {
            const frame = value as LogFrameJson;
            if ('stream' in frame) {
              const text = decoders[frame.stream].decode(decodeBase64(frame.data), { stream: true });
              if (text !== '') setChunks((prev) => append(prev, { stream: frame.stream, text }));
            } else if ('end' in frame) {
              outcome.ended = frame.end;
            } else if ('error' in frame) {
              outcome.failure = frame.error.message;
            }
          });
        } catch (error) {
          if (stopped()) return;
          // Refusals (a token without deploy rights, a task that is gone) do not get better by retrying.
          if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
            setStatus(errorText(error));
            return;
          }
          outcome.failure = errorText(error);
        }
        if (stopped()) return;
        if (outcome.ended !== null) {
          setStatus(`ended: ${outcome.ended}`);
          return;
        }
        setStatus(`${outcome.failure ?? 'the stream ended early'}; retrying…`);
        await sleep(backoffMs, stop.signal);
        backoffMs = Math.min(backoffMs * 2, 10_000);
      }
    }
    void follow();
    return () => stop.abort();
  }, [props.id]);
  return html`<div class="logs">
    <div class="muted" data-testid="logs-status">${status}</div>
    <pre data-testid="task-logs" ref=${pre} onScroll=${scrolled}>
${chunks.map((chunk, i) => html`<span key=${i} class=${chunk.stream}>${chunk.text}</span>`)}</pre>
  </div>`;
}
