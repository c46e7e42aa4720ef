/**
 * #/nodes — each node with its state, capacity, drivers and labels, Drain / Cancel drain (operator tokens),
 * and the topology: each node a box as wide as its CPU (against the largest node), its live tasks blocks as
 * wide as their CPU share of it.
 */
import type { ComponentChildren } from 'preact';
import type { MemberView, TaskView } from '../../api/index.ts';
import { postJson } from '../api.ts';
import { ActionButton, ErrorNote, Loading, StateBadge } from '../components.ts';
import { bytes, cpu } from '../format.ts';
import { html } from '../html.ts';
import { allocations, useMembers, useTasks } from './overview.ts';

function drain(node: string, on: boolean): Promise<unknown> {
  return postJson(`/v1/nodes/${encodeURIComponent(node)}/drain`, { drain: on });
}

export function Nodes(): ComponentChildren {
  const members = useMembers();
  const tasks = useTasks();
  return html`<div class="page">
    <h1>Nodes</h1>
    <${ErrorNote} error=${members.error ?? tasks.error} />
    ${
      members.data === null
        ? html`<${Loading} />`
        : html`<table>
              <thead>
                <tr>
                  <th>Name</th>
                  <th>State</th>
                  <th>CPU</th>
                  <th>Memory</th>
                  <th>Drivers</th>
                  <th>Labels</th>
                  <th>Draining</th>
                  <th>Last heard</th>
                  <th></th>
                </tr>
              </thead>
              <tbody>
                ${members.data.map(
                  (m) =>
                    html`<tr
                      key=${m.id}
                      data-testid="node-row"
                      data-name=${m.name}
                      data-draining=${String(m.draining)}
                    >
                      <td>
                        <strong>${m.name}</strong>
                        <div class="muted mono small">${m.id.slice(0, 16)} · ${m.address}</div>
                      </td>
                      <td><${StateBadge} state=${m.state} /></td>
                      <td>${cpu(m.cpuMillis)}</td>
                      <td>${bytes(m.memoryBytes)}</td>
                      <td>${m.drivers.join(', ') || html`<span class="muted">none</span>`}</td>
                      <td class="mono small">
                        ${
                          Object.entries(m.labels)
                            .map(([k, v]) => `${k}=${v}`)
                            .join(' ') || ''
                        }
                      </td>
                      <td data-testid="node-draining">
                        ${m.draining ? html`<span class="badge draining">draining</span>` : 'no'}
                      </td>
                      <td>${(m.lastHeardMsAgo / 1000).toFixed(1)} s ago</td>
                      <td>
                        ${
                          m.draining
                            ? html`<${ActionButton}
                                label="Cancel drain"
                                testid="undrain-button"
                                action=${() => drain(m.name, false)}
                                done=${members.reload}
                              />`
                            : html`<${ActionButton}
                                label="Drain"
                                testid="drain-button"
                                kind="danger"
                                action=${() => drain(m.name, true)}
                                done=${members.reload}
                              />`
                        }
                      </td>
                    </tr>`,
                )}
              </tbody>
            </table>
            <h2>Topology</h2>
            <${Topology} members=${members.data} tasks=${tasks.data ?? []} />`
    }
  </div>`;
}

function Topology(props: { members: MemberView[]; tasks: TaskView[] }): ComponentChildren {
  const largest = Math.max(1, ...props.members.map((m) => m.cpuMillis));
  const used = allocations(props.tasks);
  return html`<div class="topology" data-testid="topology">
    ${props.members.map((m) => {
      const alloc = used.get(m.id);
      const width = Math.max(12, (m.cpuMillis / largest) * 100);
      return html`<div
        key=${m.id}
        class=${`box ${m.state}${m.draining ? ' draining' : ''}`}
        style=${`width: ${width.toFixed(1)}%`}
        data-testid="topology-node"
        data-name=${m.name}
      >
        <div class="box-title">
          ${m.name} <span class="muted">${cpu(alloc?.cpuMillis ?? 0)} / ${cpu(m.cpuMillis)}</span>
        </div>
        <div class="blocks">
          ${(alloc?.tasks ?? []).map(
            (t) =>
              html`<a
                key=${t.id}
                href=${`#/tasks/${t.id}`}
                class=${`block state-${t.state}`}
                style=${`width: ${m.cpuMillis > 0 ? ((t.cpuMillis / m.cpuMillis) * 100).toFixed(2) : 0}%`}
                title=${`${t.name} (${t.id}) · ${t.state} · ${cpu(t.cpuMillis)} · ${bytes(t.memoryBytes)}`}
                data-testid="topology-task"
                data-id=${t.id}
                >${t.name}</a
              >`,
          )}
        </div>
      </div>`;
    })}
  </div>`;
}
