/**
 * The dashboard's frame: the login (a token, kept in localStorage), then a nav bar and the page of the
 * current hash route, with one event stream for as long as the token is in use.
 */
import type { ComponentChildren } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import type { StatusView } from '../api/index.ts';
import { clearToken, errorText, onUnauthorized, request, saveToken, storedToken } from './api.ts';
import { EventStream, type StreamState } from './events.ts';
import { html } from './html.ts';
import { StreamContext, useRoute, type Route } from './hooks.ts';
import { Jobs } from './pages/jobs.ts';
import { Namespaces } from './pages/namespaces.ts';
import { Nodes } from './pages/nodes.ts';
import { Overview } from './pages/overview.ts';
import { Queue } from './pages/queue.ts';
import { TaskPage } from './pages/task.ts';
import { Tasks } from './pages/tasks.ts';

const navItems = [
  { path: '/', id: 'overview', label: 'Overview' },
  { path: '/queue', id: 'queue', label: 'Queue' },
  { path: '/tasks', id: 'tasks', label: 'Tasks' },
  { path: '/nodes', id: 'nodes', label: 'Nodes' },
  { path: '/namespaces', id: 'namespaces', label: 'Namespaces' },
  { path: '/jobs', id: 'jobs', label: 'Jobs' },
] as const;

export function App(): ComponentChildren {
  const [token, setToken] = useState(storedToken);
  const [message, setMessage] = useState<string | null>(null);
  useEffect(() => {
    onUnauthorized((reason) => {
      clearToken();
      // The first refusal says why; the calls that were under way then are refused too.
      setMessage((shown) => shown ?? reason);
      setToken(null);
    });
  }, []);
  if (token === null)
    return html`<${Login}
      message=${message}
      accepted=${(secret: string) => {
        saveToken(secret);
        setMessage(null);
        setToken(secret);
      }}
    />`;
  return html`<${Shell}
    key=${token}
    logout=${() => {
      clearToken();
      setMessage(null);
      setToken(null);
    }}
  />`;
}

function Login(props: { message: string | null; accepted: (token: string) => void }): ComponentChildren {
  const [secret, setSecret] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = (event: Event): void => {
    event.preventDefault();
    const token = secret.trim();
    if (token === '') {
      setError(
        'Paste a token: the management token (DATA_DIR/management.token), or one from shoal acl token create.',
      );
      return;
    }
    setBusy(true);
    setError(null);
    request('/v1/status', { token }).then(
      () => {
        setBusy(false);
        props.accepted(token);
      },
      (failure: unknown) => {
        setBusy(false);
        setError(errorText(failure));
      },
    );
  };
  const shown = error ?? props.message;
  return html`<div class="login">
    <h1>shoal</h1>
    <form onSubmit=${submit}>
      <label for="token">API token</label>
      <input
        id="token"
        type="password"
        autocomplete="off"
        data-testid="login-token"
        value=${secret}
        onInput=${(e: Event) => setSecret((e.currentTarget as HTMLInputElement).value)}
      />
      <button type="submit" data-testid="login-submit" disabled=${busy}>
        ${busy ? 'Checking…' : 'Log in'}
      </button>
    </form>
    ${shown === null ? null : html`<div class="note error" data-testid="login-error">${shown}</div>`}
    <p class="muted small">The token stays in this browser (localStorage) and is sent with every API call.</p>
  </div>`;
}

function Shell(props: { logout: () => void }): ComponentChildren {
  const stream = useMemo(() => new EventStream(), []);
  const [streamState, setStreamState] = useState<StreamState>(stream.state);
  useEffect(() => {
    const off = stream.onState(setStreamState);
    stream.start();
    return () => {
      off();
      stream.close();
    };
  }, [stream]);
  const route = useRoute();
  return html`<${StreamContext.Provider} value=${stream}>
    <nav>
      <span class="brand">shoal</span>
      ${navItems.map(
        (item) =>
          html`<a
            key=${item.id}
            href=${`#${item.path}`}
            data-testid=${`nav-${item.id}`}
            class=${section(route.path) === item.path ? 'active' : ''}
            >${item.label}</a
          >`,
      )}
      <span class="spacer"></span>
      <${NodeName} />
      <span
        class=${`stream ${streamState.connected ? 'live' : 'down'}`}
        data-testid="stream-status"
        data-connected=${String(streamState.connected)}
        title=${streamState.problem ?? `events read up to index ${streamState.index ?? '—'}`}
        >${streamState.connected ? 'live' : streamState.problem === null ? 'connecting' : 'reconnecting'}</span
      >
      <button type="button" class="link" data-testid="logout" onClick=${props.logout}>Log out</button>
    </nav>
    <main>${page(route)}</main>
  <//>`;
}

/** The nav item a path belongs to: #/tasks/ID is under Tasks. */
function section(path: string): string {
  const first = path.split('/')[1] ?? '';
  return `/${first}`;
}

/** The node serving the dashboard, from its status (once). */
function NodeName(): ComponentChildren {
  const [name, setName] = useState<string | null>(null);
  useEffect(() => {
    request('/v1/status').then(
      async (response) => setName(((await response.json()) as StatusView).name),
      () => undefined,
    );
  }, []);
  return name === null ? null : html`<span class="muted small" data-testid="served-by">via ${name}</span>`;
}

function page(route: Route): ComponentChildren {
  const task = /^\/tasks\/([0-9a-f]{12})$/.exec(route.path);
  if (task?.[1] !== undefined) return html`<${TaskPage} key=${task[1]} id=${task[1]} />`;
  switch (route.path) {
    case '/':
    case '':
      return html`<${Overview} />`;
    case '/queue':
      return html`<${Queue} />`;
    case '/tasks':
      return html`<${Tasks} route=${route} />`;
    case '/nodes':
      return html`<${Nodes} />`;
    case '/namespaces':
      return html`<${Namespaces} />`;
    case '/jobs':
      return html`<${Jobs} />`;
    default:
      return html`<div class="page">
        <h1>Not found</h1>
        <p>No page at #${route.path}. <a href="#/">Overview</a></p>
      </div>`;
  }
}
