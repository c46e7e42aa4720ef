/** #/ — the leader and term, voters, members with their CPU and memory in use, tasks by state, recent events. */
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import type { MemberView, StatusView, TaskView } from '../../api/index.ts';
import { getJson } from '../api.ts';
import { Bar, ErrorNote, Loading, StateBadge } from '../components.ts';
import type { ClusterEvent, StreamMessage } from '../events.ts';
import { bytes, clock, cpu, holdsNode, taskStates } from '../format.ts';
import { html } from '../html.ts';
import { useResource, useStream, useStreamMessages, type Resource } from '../hooks.ts';

export const isTaskEvent = (m: StreamMessage): boolean => m.type.startsWith('task:');
export const isNodeEvent = (m: StreamMessage): boolean => m.type.startsWith('node:');
const isStatusEvent = (m: StreamMessage): boolean => m.type === 'leader:elected' || isNodeEvent(m);

/** Every task, refetched on task events (several pages show them). */
export function useTasks(): Resource<TaskView[]> {
  return useResource('tasks', (signal) => getJson<TaskView[]>('/v1/tasks', signal), isTaskEvent);
}

/** The members, refetched on node events (several pages show them). */
export function useMembers(): Resource<MemberView[]> {
  return useResource('members', (signal) => getJson<MemberView[]>('/v1/members', signal), isNodeEvent);
}

/** CPU and memory held by live tasks, by node id. */
export function allocations(
  tasks: readonly TaskView[],
): Map<string, { cpuMillis: number; memoryBytes: number; tasks: TaskView[] }> {
  const byNode = new Map<string, { cpuMillis: number; memoryBytes: number; tasks: TaskView[] }>();
  for (const task of tasks) {
    if (!holdsNode(task) || task.nodeId === null) continue;
    const entry = byNode.get(task.nodeId) ?? { cpuMillis: 0, memoryBytes: 0, tasks: [] };
    entry.cpuMillis += task.cpuMillis;
    entry.memoryBytes += task.memoryBytes;
    entry.tasks.push(task);
    byNode.set(task.nodeId, entry);
  }
  return byNode;
}

export function Overview(): ComponentChildren {
  const status = useResource('status', (signal) => getJson<StatusView>('/v1/status', signal), isStatusEvent);
  const members = useMembers();
  const tasks = useTasks();
  return html`<div class="page">
    <h1>Overview</h1>
    <${StatusPanel} status=${status.data} error=${status.error} />
    <h2>Members</h2>
    <${ErrorNote} error=${members.error ?? tasks.error} />
    ${
      members.data === null
        ? html`<${Loading} />`
        : html`<${MemberTable} members=${members.data} status=${status.data} tasks=${tasks.data} />`
    }
    <div class="columns">
      <section>
        <h2>Tasks by state</h2>
        ${tasks.data === null ? html`<${Loading} />` : html`<${StateCounts} tasks=${tasks.data} />`}
      </section>
      <section>
        <h2>Recent events</h2>
        <${RecentEvents} />
      </section>
    </div>
  </div>`;
}

function StatusPanel(props: { status: StatusView | null; error: string | null }): ComponentChildren {
  const { status } = props;
  if (status === null)
    return html`<${ErrorNote} error=${props.error} />${props.error === null ? html`<${Loading} />` : null}`;
  return html`<${ErrorNote} error=${props.error} />
    <div class="cards">
      <div class="card">
        <div class="label">Leader</div>
        <div class="value" data-testid="leader" data-id=${status.leader?.id ?? ''}>
          ${status.leader?.name ?? '(none)'}
        </div>
      </div>
      <div class="card">
        <div class="label">Term</div>
        <div class="value" data-testid="term">${status.term}</div>
      </div>
      <div class="card">
        <div class="label">Voters</div>
        <div class="value small" data-testid="voters">
          ${status.voters.map((v) => v.name).join(', ') || '(none)'}
        </div>
        ${
          status.learners.length > 0
            ? html`<div class="muted">learners: ${status.learners.map((l) => l.name).join(', ')}</div>`
            : null
        }
      </div>
      <div class="card">
        <div class="label">This node</div>
        <div class="value small" data-testid="self">${status.name} · ${status.role}</div>
        <div class="muted">commit index ${status.commitIndex}</div>
      </div>
    </div>
    ${status.warning === null ? null : html`<div class="note warn" data-testid="status-warning">${status.warning}</div>`}`;
}

function MemberTable(props: {
  members: MemberView[];
  status: StatusView | null;
  tasks: TaskView[] | null;
}): ComponentChildren {
  const used = allocations(props.tasks ?? []);
  const leaderId = props.status?.leader?.id ?? null;
  return html`<table>
    <thead>
      <tr>
        <th>Name</th>
        <th>State</th>
        <th>Address</th>
        <th class="wide">CPU</th>
        <th class="wide">Memory</th>
        <th>Tasks</th>
      </tr>
    </thead>
    <tbody>
      ${props.members.map((member) => {
        const alloc = used.get(member.id);
        const cpuUsed = alloc?.cpuMillis ?? 0;
        const memUsed = alloc?.memoryBytes ?? 0;
        return html`<tr
          key=${member.id}
          data-testid="member-row"
          data-name=${member.name}
          data-state=${member.state}
        >
          <td>
            <strong>${member.name}</strong>
            ${member.id === leaderId ? html` <span class="badge leader">leader</span>` : null}
            ${member.draining ? html` <span class="badge draining">draining</span>` : null}
          </td>
          <td><${StateBadge} state=${member.state} /></td>
          <td class="mono">${member.address}</td>
          <td>
            <${Bar}
              testid="cpu-bar"
              used=${cpuUsed}
              total=${member.cpuMillis}
              label=${`${cpu(cpuUsed)} / ${cpu(member.cpuMillis)}`}
            />
          </td>
          <td>
            <${Bar}
              testid="memory-bar"
              used=${memUsed}
              total=${member.memoryBytes}
              label=${`${bytes(memUsed)} / ${bytes(member.memoryBytes)}`}
            />
          </td>
          <td>${alloc?.tasks.length ?? 0}</td>
        </tr>`;
      })}
    </tbody>
  </table>`;
}

function StateCounts(props: { tasks: TaskView[] }): ComponentChildren {
  const counts = new Map<string, number>();
  for (const task of props.tasks) counts.set(task.state, (counts.get(task.state) ?? 0) + 1);
  return html`<table class="narrow">
    <tbody>
      ${taskStates.map(
        (state) =>
          html`<tr key=${state} data-testid="state-count" data-state=${state}>
            <td>
              <a href=${`#/tasks?state=${state}`}><${StateBadge} state=${state} /></a>
            </td>
            <td class="num">${counts.get(state) ?? 0}</td>
          </tr>`,
      )}
      <tr>
        <td>total</td>
        <td class="num">${props.tasks.length}</td>
      </tr>
    </tbody>
  </table>`;
}

function RecentEvents(): ComponentChildren {
  const stream = useStream();
  const [events, setEvents] = useState<readonly ClusterEvent[]>(stream.recent);
  useStreamMessages(() => setEvents(stream.recent));
  if (events.length === 0) return html`<p class="muted">No events yet.</p>`;
  return html`<ul class="events">
    ${events.map(
      (event) =>
        html`<li
          key=${`${event.index}-${event.type}-${'taskId' in event ? event.taskId : ''}`}
          data-testid="event-row"
          data-type=${event.type}
        >
          <span class="muted mono">${clock(event.at)}</span>
          <span class="mono">${event.type}</span> ${describe(event)}
        </li>`,
    )}
  </ul>`;
}

/** One line about an event. */
export function describe(event: ClusterEvent): ComponentChildren {
  switch (event.type) {
    case 'task:submitted':
    case 'task:assigned':
    case 'task:state':
    case 'task:desired':
    case 'task:health':
    case 'task:note': {
      const link = html`<a href=${`#/tasks/${event.taskId}`}>${event.name}</a>`;
      if (event.type === 'task:assigned') return html`${link} → ${event.node}`;
      if (event.type === 'task:health')
        return html`${link}: ${event.health}${event.message === '' ? '' : ` (${event.message})`}`;
      if (event.type === 'task:note') return html`${link}: ${event.message}`;
      if (event.type === 'task:desired')
        return html`${link}: ${event.desired}${event.reason === null ? '' : ` (${event.reason})`}`;
      if (event.type === 'task:state')
        return html`${link}
          <${StateBadge}
            state=${event.state}
          />${event.node === null ? '' : ` on ${event.node}`}${event.reason === null ? '' : ` (${event.reason})`}`;
      return html`${link} <${StateBadge} state=${event.state} />`;
    }
    case 'node:up':
      return html`<strong>${event.node}</strong> is up`;
    case 'node:down':
      return html`<strong>${event.node}</strong> is down (${event.reason})`;
    case 'node:draining':
      return html`<strong>${event.node}</strong> ${event.draining ? 'drains' : 'no longer drains'}`;
    case 'leader:elected':
      return html`<strong>${event.leader}</strong> leads, term ${event.term}`;
  }
}
