/** #/tasks — every task, newest first, filtered by state, node, namespace and job (kept in the address). */
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import type { TaskView } from '../../api/index.ts';
import { ErrorNote, Loading, StateBadge } from '../components.ts';
import { age, bytes, cpu, taskStates } from '../format.ts';
import { html } from '../html.ts';
import type { Route } from '../hooks.ts';
import { useTasks } from './overview.ts';

/** Rows drawn at most; the filters narrow the rest. */
const rowsMax = 500;

type FilterKey = 'state' | 'node' | 'namespace' | 'job';
type Filters = Record<FilterKey, string>;

function filtersOf(query: URLSearchParams): Filters {
  return {
    state: query.get('state') ?? '',
    node: query.get('node') ?? '',
    namespace: query.get('namespace') ?? '',
    job: query.get('job') ?? '',
  };
}

function matches(task: TaskView, filters: Filters): boolean {
  if (filters.state !== '' && task.state !== filters.state) return false;
  if (filters.node !== '' && (task.node ?? '') !== filters.node) return false;
  if (filters.namespace !== '' && task.namespace !== filters.namespace) return false;
  if (filters.job !== '' && (task.job ?? '') !== filters.job) return false;
  return true;
}

function distinct(values: readonly (string | null)[]): string[] {
  return [...new Set(values.filter((v): v is string => v !== null && v !== ''))].sort();
}

export function Tasks(props: { route: Route }): ComponentChildren {
  const tasks = useTasks();
  const [filters, setFilters] = useState<Filters>(() => filtersOf(props.route.query));
  // A link or the nav bar changed the address (filter changes replace it without a hashchange).
  useEffect(() => setFilters(filtersOf(props.route.query)), [props.route]);
  const set = (key: FilterKey, value: string): void => {
    const next = { ...filters, [key]: value };
    setFilters(next);
    const query = new URLSearchParams(Object.entries(next).filter(([, v]) => v !== '')).toString();
    // The address keeps the filters (a link, a reload) without a history entry per change.
    history.replaceState(null, '', `#/tasks${query === '' ? '' : `?${query}`}`);
  };
  const all = tasks.data ?? [];
  const shown = all.filter((task) => matches(task, filters)).reverse();
  const select = (key: FilterKey, options: readonly string[]): ComponentChildren =>
    html`<label
      >${key}
      <select
        data-testid=${`filter-${key}`}
        value=${filters[key]}
        onChange=${(event: Event) => set(key, (event.currentTarget as HTMLSelectElement).value)}
      >
        <option value="">all</option>
        ${[...new Set([...options, ...(filters[key] === '' ? [] : [filters[key]])])].map(
          (option) => html`<option key=${option} value=${option}>${option}</option>`,
        )}
      </select></label
    >`;
  return html`<div class="page">
    <h1>Tasks</h1>
    <div class="filters">
      ${select('state', taskStates)} ${select('node', distinct(all.map((t) => t.node)))}
      ${select('namespace', distinct(all.map((t) => t.namespace)))}
      ${select('job', distinct(all.map((t) => t.job)))}
      <span class="muted" data-testid="task-count">${shown.length} of ${all.length}</span>
    </div>
    <${ErrorNote} error=${tasks.error} />
    ${
      tasks.data === null
        ? html`<${Loading} />`
        : html`<table>
              <thead>
                <tr>
                  <th>Task</th>
                  <th>State</th>
                  <th>Node</th>
                  <th>Namespace</th>
                  <th>Job</th>
                  <th>Priority</th>
                  <th>CPU</th>
                  <th>Memory</th>
                  <th>Submitted</th>
                  <th>Reason</th>
                </tr>
              </thead>
              <tbody>
                ${shown.slice(0, rowsMax).map(
                  (task) =>
                    html`<tr
                      key=${task.id}
                      data-testid="task-row"
                      data-id=${task.id}
                      data-state=${task.state}
                    >
                      <td>
                        <a href=${`#/tasks/${task.id}`}>${task.name}</a>
                        <span class="muted mono id">${task.id}</span>
                      </td>
                      <td>
                        <${StateBadge}
                          state=${task.state}
                        />${task.exitCode === null ? '' : html` <span class="muted">exit ${task.exitCode}</span>`}
                      </td>
                      <td>${task.node ?? html`<span class="muted">—</span>`}</td>
                      <td>${task.namespace}</td>
                      <td>${task.job ?? ''}</td>
                      <td class="num">${task.priority}</td>
                      <td>${cpu(task.cpuMillis)}</td>
                      <td>${bytes(task.memoryBytes)}</td>
                      <td title=${task.submittedAt}>${age(task.submittedAt)}</td>
                      <td class="reason">${task.reason ?? ''}</td>
                    </tr>`,
                )}
              </tbody>
            </table>
            ${shown.length > rowsMax ? html`<p class="muted">Showing the newest ${rowsMax}; filter to see others.</p>` : null}`
    }
  </div>`;
}
