/**
 * #/queue — the pending tasks in the order the allocator takes them (GET /v1/queue: strict priority, then
 * namespaces in turn by weighted dominant share, then FIFO; src/allocator/queue-order.ts), each with why
 * it waits.
 */
import type { ComponentChildren } from 'preact';
import type { TaskView } from '../../api/index.ts';
import { getJson } from '../api.ts';
import { ErrorNote, Loading } from '../components.ts';
import { age, bytes, cpu } from '../format.ts';
import { html } from '../html.ts';
import { useResource } from '../hooks.ts';
import { isTaskEvent } from './overview.ts';

export function Queue(): ComponentChildren {
  const tasks = useResource('queue', (signal) => getJson<TaskView[]>('/v1/queue', signal), isTaskEvent);
  const queue = tasks.data;
  return html`<div class="page">
    <h1>Queue</h1>
    <p class="muted">
      Pending tasks in the order the allocator takes them: highest priority first; within a priority,
      namespaces take turns by weighted dominant share; within a namespace, oldest first.
    </p>
    <${ErrorNote} error=${tasks.error} />
    ${
      queue === null
        ? html`<${Loading} />`
        : queue.length === 0
          ? html`<p data-testid="queue-empty">Nothing waits: every task is placed.</p>`
          : html`<table>
              <thead>
                <tr>
                  <th>#</th>
                  <th>Task</th>
                  <th>Namespace</th>
                  <th>Priority</th>
                  <th>CPU</th>
                  <th>Memory</th>
                  <th>Submitted</th>
                  <th>Why it waits</th>
                </tr>
              </thead>
              <tbody>
                ${queue.map(
                  (task, position) =>
                    html`<tr key=${task.id} data-testid="queue-row" data-id=${task.id}>
                      <td class="num">${position + 1}</td>
                      <td>
                        <a href=${`#/tasks/${task.id}`}>${task.name}</a>
                        <span class="muted mono id">${task.id}</span>
                      </td>
                      <td>
                        ${task.namespace}${task.job === null ? '' : html` <span class="muted">job ${task.job}</span>`}
                      </td>
                      <td class="num">${task.priority}</td>
                      <td>${cpu(task.cpuMillis)}</td>
                      <td>${bytes(task.memoryBytes)}</td>
                      <td title=${task.submittedAt}>${age(task.submittedAt)}</td>
                      <td data-testid="queue-reason">
                        ${task.reason ?? html`<span class="muted">waiting for the allocator</span>`}
                      </td>
                    </tr>`,
                )}
              </tbody>
            </table>`
    }
  </div>`;
}
