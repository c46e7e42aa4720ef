/**
 * #/namespaces — each namespace's share weight and quota, beside what its live tasks hold now and its
 * dominant share (the larger of its share of the alive members' CPU and memory), the figure the allocator
 * compares, weighted, to decide which namespace goes next.
 */
import type { ComponentChildren } from 'preact';
import type { Answer } from '../../api/index.ts';
import { getJson } from '../api.ts';
import { Bar, ErrorNote, Loading } from '../components.ts';
import { bytes, cpu, holdsNode, isLive } from '../format.ts';
import { html } from '../html.ts';
import { useResource } from '../hooks.ts';
import { useMembers, useTasks } from './overview.ts';

type Namespace = Answer<'namespaces'>[number];

/** A quota's limit and what is used of it, as a bar; no limit: the use alone. */
function limit(used: number, max: number | undefined, format: (n: number) => string): ComponentChildren {
  if (max === undefined) return html`${format(used)} <span class="muted">(no limit)</span>`;
  return html`<${Bar} used=${used} total=${max} label=${`${format(used)} / ${format(max)}`} />`;
}

export function Namespaces(): ComponentChildren {
  const namespaces = useResource(
    'namespaces',
    (signal) => getJson<Answer<'namespaces'>>('/v1/namespaces', signal),
    () => false,
  );
  const tasks = useTasks();
  const members = useMembers();
  let cpuTotal = 0;
  let memoryTotal = 0;
  for (const member of members.data ?? [])
    if (member.state === 'alive') {
      cpuTotal += member.cpuMillis;
      memoryTotal += member.memoryBytes;
    }
  const dominant = (use: { cpuMillis: number; memoryBytes: number }): number =>
    Math.max(
      cpuTotal > 0 ? use.cpuMillis / cpuTotal : 0,
      memoryTotal > 0 ? use.memoryBytes / memoryTotal : 0,
    );
  const usage = new Map<string, { cpuMillis: number; memoryBytes: number; live: number; pending: number }>();
  for (const task of tasks.data ?? []) {
    if (!isLive(task)) continue;
    const entry = usage.get(task.namespace) ?? { cpuMillis: 0, memoryBytes: 0, live: 0, pending: 0 };
    entry.live++;
    if (task.state === 'pending') entry.pending++;
    if (holdsNode(task)) {
      entry.cpuMillis += task.cpuMillis;
      entry.memoryBytes += task.memoryBytes;
    }
    usage.set(task.namespace, entry);
  }
  const listed: Namespace[] = [...(namespaces.data ?? [])];
  // Namespaces in use without a policy of their own: the default weight, no quota.
  for (const name of usage.keys())
    if (!listed.some((n) => n.name === name)) listed.push({ name, weight: 1, quota: null });
  return html`<div class="page">
    <h1>Namespaces</h1>
    <p class="muted">
      Weights set each namespace's share of the cluster when tasks compete; quotas cap what its live tasks
      hold.
    </p>
    <${ErrorNote} error=${namespaces.error ?? tasks.error} />
    ${
      namespaces.data === null
        ? html`<${Loading} />`
        : html`<table>
            <thead>
              <tr>
                <th>Namespace</th>
                <th>Weight</th>
                <th class="wide">CPU (quota)</th>
                <th class="wide">Memory (quota)</th>
                <th>Disk quota</th>
                <th>Devices</th>
                <th>Dominant share</th>
                <th>Live tasks</th>
                <th>Pending</th>
              </tr>
            </thead>
            <tbody>
              ${listed.map((ns) => {
                const use = usage.get(ns.name) ?? { cpuMillis: 0, memoryBytes: 0, live: 0, pending: 0 };
                const defaulted = !(namespaces.data ?? []).some((n) => n.name === ns.name);
                return html`<tr key=${ns.name} data-testid="namespace-row" data-name=${ns.name}>
                  <td>
                    <strong>${ns.name}</strong
                    >${defaulted ? html` <span class="muted">(default policy)</span>` : null}
                  </td>
                  <td class="num" data-testid="namespace-weight">${ns.weight}</td>
                  <td>${limit(use.cpuMillis, ns.quota?.cpuMillis, cpu)}</td>
                  <td>${limit(use.memoryBytes, ns.quota?.memoryBytes, bytes)}</td>
                  <td>${ns.quota?.diskBytes === undefined ? '—' : bytes(ns.quota.diskBytes)}</td>
                  <td class="mono small">
                    ${
                      Object.entries(ns.quota?.devices ?? {})
                        .map(([k, v]) => `${k}: ${v}`)
                        .join(', ') || '—'
                    }
                  </td>
                  <td class="num" data-testid="namespace-share" title="weighted: the share over the weight">
                    ${(dominant(use) * 100).toFixed(1)} %
                    <span class="muted"
                      >(÷${ns.weight} = ${((dominant(use) / ns.weight) * 100).toFixed(1)} %)</span
                    >
                  </td>
                  <td class="num">${use.live}</td>
                  <td class="num">${use.pending}</td>
                </tr>`;
              })}
            </tbody>
          </table>`
    }
  </div>`;
}
