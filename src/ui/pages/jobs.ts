/** #/jobs — every job: type, version, status, its groups, and its instances by state. */
import type { ComponentChildren } from 'preact';
import type { Answer } from '../../api/index.ts';
import { getJson } from '../api.ts';
import { ErrorNote, Loading, StateBadge } from '../components.ts';
import { age, taskStates } from '../format.ts';
import { html } from '../html.ts';
import { useResource } from '../hooks.ts';
import { isTaskEvent } from './overview.ts';

type Job = Answer<'jobs'>[number];

function States(props: { states: Job['states'] }): ComponentChildren {
  const known: readonly string[] = taskStates;
  const order = [...taskStates, ...Object.keys(props.states).filter((s) => !known.includes(s))];
  const present = order.filter((state) => (props.states[state] ?? 0) > 0);
  if (present.length === 0) return html`<span class="muted">none</span>`;
  return present.map(
    (state) =>
      html`<span key=${state} class="count" data-state=${state}
        ><${StateBadge} state=${state} /> ${props.states[state]}</span
      > `,
  );
}

export function Jobs(): ComponentChildren {
  const jobs = useResource('jobs', (signal) => getJson<Answer<'jobs'>>('/v1/jobs', signal), isTaskEvent);
  return html`<div class="page">
    <h1>Jobs</h1>
    <${ErrorNote} error=${jobs.error} />
    ${
      jobs.data === null
        ? html`<${Loading} />`
        : jobs.data.length === 0
          ? html`<p data-testid="jobs-empty">No jobs (shoal job apply FILE makes one).</p>`
          : html`<table>
              <thead>
                <tr>
                  <th>Job</th>
                  <th>Namespace</th>
                  <th>Type</th>
                  <th>Version</th>
                  <th>Status</th>
                  <th>Groups</th>
                  <th>Instances</th>
                  <th>Updated</th>
                </tr>
              </thead>
              <tbody>
                ${jobs.data.map(
                  (job) =>
                    html`<tr
                      key=${`${job.namespace}/${job.name}`}
                      data-testid="job-row"
                      data-name=${job.name}
                      data-status=${job.status}
                    >
                      <td>
                        <a href=${`#/tasks?job=${encodeURIComponent(job.name)}`}
                          ><strong>${job.name}</strong></a
                        >
                        ${job.parent === null ? null : html`<div class="muted small">launched by ${job.parent}</div>`}
                      </td>
                      <td>${job.namespace}</td>
                      <td>${job.type}</td>
                      <td class="num">${job.version}</td>
                      <td>
                        <span class=${`badge job-${job.status}`}>${job.status}</span>
                        ${job.nextLaunchAt === null ? null : html`<div class="muted small">next launch ${job.nextLaunchAt}</div>`}
                      </td>
                      <td>
                        ${job.groups.map((g) => html`<div key=${g.name}>${g.name} × ${g.count ?? 'each node'}</div>`)}
                      </td>
                      <td data-testid="job-states"><${States} states=${job.states} /></td>
                      <td title=${job.updatedAt}>${age(job.updatedAt)}</td>
                    </tr>`,
                )}
              </tbody>
            </table>`
    }
  </div>`;
}
