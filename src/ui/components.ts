/** Small pieces the pages share: usage bars, state badges, error notes, buttons that call the API. */
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { errorText } from './api.ts';
import { html } from './html.ts';

/** A horizontal bar: `used` of `total`, with its label. */
export function Bar(props: {
  used: number;
  total: number;
  label: string;
  testid?: string;
}): ComponentChildren {
  const fraction = props.total > 0 ? Math.min(1, props.used / props.total) : 0;
  const level = fraction >= 0.9 ? 'high' : fraction >= 0.6 ? 'mid' : 'low';
  return html`<div
    class="bar"
    data-testid=${props.testid}
    data-used=${props.used}
    data-total=${props.total}
    title=${props.label}
  >
    <div class=${`fill ${level}`} style=${`width: ${(fraction * 100).toFixed(1)}%`}></div>
    <span>${props.label}</span>
  </div>`;
}

export function StateBadge(props: { state: string }): ComponentChildren {
  return html`<span class=${`badge state-${props.state}`}>${props.state}</span>`;
}

/** A failed fetch: shown above what the page last had. */
export function ErrorNote(props: { error: string | null }): ComponentChildren {
  if (props.error === null) return null;
  return html`<div class="note error" data-testid="fetch-error">${props.error}</div>`;
}

export function Loading(): ComponentChildren {
  return html`<p class="muted">Loading…</p>`;
}

/** A button that calls the API; the server's refusal (a 403 for a read-only token, say) shows beside it. */
export function ActionButton(props: {
  label: string;
  testid: string;
  action: () => Promise<unknown>;
  done?: () => void;
  kind?: 'danger' | 'plain';
}): ComponentChildren {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const click = (): void => {
    setBusy(true);
    setError(null);
    props.action().then(
      () => {
        setBusy(false);
        props.done?.();
      },
      (failure: unknown) => {
        setBusy(false);
        setError(errorText(failure));
      },
    );
  };
  return html`<span class="action">
    <button
      type="button"
      class=${props.kind === 'danger' ? 'danger' : ''}
      data-testid=${props.testid}
      disabled=${busy}
      onClick=${click}
    >
      ${busy ? '…' : props.label}
    </button>
    ${error === null ? null : html`<span class="note error inline" data-testid="action-error">${error}</span>`}
  </span>`;
}
