/**
 * How the CLI shows the API's views to people. The views carry quantities in their units (`cpuMillis`,
 * `memoryBytes`, `lastHeardMsAgo`); here they become cores, MiB and seconds. Pure: views in, text out.
 */
import type {
  FrameworkDetailView,
  FrameworkView,
  DeploymentView,
  EventFrame,
  MemberView,
  ServiceView,
  StatusView,
  TaskDetailView,
  TaskView,
  TokenView,
} from '../api/index.ts';
import type { NamespacePolicySpec } from '../cluster/index.ts';
import { mebibyte } from '../shared/index.ts';

/** CPU in cores as people type it (`--cpu 0.5`): 500 → "0.5". */
export function formatCores(cpuMillis: number): string {
  return String(cpuMillis / 1000);
}

/** Whole MiB, rounded down: a node offers no less than it says. */
export function formatMebibytes(bytes: number): string {
  return `${Math.floor(bytes / mebibyte)} MiB`;
}

export function formatJson(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}

/** Columns padded to their widest cell, two spaces apart; the last column is not padded. */
export function formatTable(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return (
    rows
      .map((row) =>
        row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '),
      )
      .join('\n') + '\n'
  );
}

export function formatTasks(tasks: readonly TaskView[]): string {
  const rows = [['ID', 'NAME', 'STATE', 'NODE', 'PORTS', 'PRIO', 'EXIT', 'REASON']];
  for (const task of tasks) {
    rows.push([
      task.id,
      task.framework === null ? task.name : `${task.name} [${task.framework.name}]`,
      task.health === null || task.state !== 'running' ? task.state : `${task.state},${task.health.status}`,
      task.node ?? '-',
      formatPorts(task) || '-',
      String(task.priority),
      task.exitCode === null ? '-' : String(task.exitCode),
      task.reason ?? '',
    ]);
  }
  return formatTable(rows);
}

export function formatTaskDetail(task: TaskDetailView): string {
  const what =
    task.driver === 'docker' ? `${task.image ?? ''} ${task.command.join(' ')}` : task.command.join(' ');
  return (
    `task:     ${task.id} (${task.name})\n` +
    `state:    ${task.state}${task.exitCode === null ? '' : `, exit code ${task.exitCode}`}\n` +
    `reason:   ${task.reason ?? '-'}\n` +
    `node:     ${task.node ?? '-'}\n` +
    (task.ports.length === 0 ? '' : `ports:    ${formatPorts(task)}\n`) +
    (task.health === null
      ? ''
      : `health:   ${task.health.status} since ${task.health.since}${task.health.message === '' ? '' : `: ${task.health.message}`}\n`) +
    `attempt:  ${task.attempt} (restart ${task.restart})\n` +
    `runs:     ${task.driver}: ${what.trim()}\n` +
    `limits:   ${formatCores(task.cpuMillis)} CPU, ${formatMebibytes(task.memoryBytes)}` +
    (task.diskBytes > 0 ? `, ${formatMebibytes(task.diskBytes)} disk` : '') +
    `${task.pidsMax === null ? '' : `, ${task.pidsMax} pids`}, priority ${task.priority}\n` +
    (task.user === null ? '' : `user:     ${task.user}\n`) +
    (Object.keys(task.devices).length === 0
      ? ''
      : `devices:  ${Object.entries(task.devices)
          .map(([kind, slots]) => `${kind} ${slots.join(',')}`)
          .join('; ')}\n`) +
    `events:\n` +
    task.events.map((event) => `  ${event.at}  ${event.message}\n`).join('')
  );
}

/** A task's ports as NAME=ADDRESS:PORT, comma separated. */
export function formatPorts(task: Pick<TaskView, 'ports'>): string {
  return task.ports.map((port) => `${port.name}=${port.address}`).join(',');
}

/** `shoal services`: one line per service, its instances that answer now. */
export function formatServices(services: readonly ServiceView[]): string {
  const rows = [['NAMESPACE', 'SERVICE', 'HEALTHY', 'RUNNING', 'ADDRESSES']];
  for (const service of services)
    rows.push([
      service.namespace,
      service.name,
      String(service.instances.length),
      String(service.running),
      service.instances.map((instance) => Object.values(instance.ports)[0] ?? instance.host).join(' ') || '-',
    ]);
  return formatTable(rows);
}

/** `shoal services NAME`: its instances that answer now, with every port. */
export function formatService(service: ServiceView): string {
  const rows = [['TASK', 'NAME', 'NODE', 'HEALTH', 'PORTS']];
  for (const instance of service.instances)
    rows.push([
      instance.taskId,
      instance.name,
      instance.node,
      instance.health,
      Object.entries(instance.ports)
        .map(([name, address]) => `${name}=${address}`)
        .join(',') || '-',
    ]);
  return (
    `service:  ${service.name} (namespace ${service.namespace}), ${service.instances.length} answering of ${service.running} running\n` +
    formatTable(rows)
  );
}

/** `shoal deployment status`: a deployment and its groups. */
export function formatDeployment(deployment: DeploymentView): string {
  const policy = deployment.policy;
  const rows = [['GROUP', 'DESIRED', 'CANARIES', 'PROMOTED', 'HEALTHY', 'UNHEALTHY', 'NEW', 'OLD']];
  for (const group of deployment.groups)
    rows.push([
      group.name,
      String(group.desiredTotal),
      `${group.placedCanaries}/${group.desiredCanaries}`,
      group.promoted ? 'yes' : 'no',
      String(group.healthy),
      String(group.unhealthy),
      String(group.current),
      String(group.old),
    ]);
  return (
    `deployment: ${deployment.id} of ${deployment.job} version ${deployment.jobVersion} (namespace ${deployment.namespace})\n` +
    `status:     ${deployment.status}: ${deployment.statusReason}\n` +
    `policy:     max parallel ${policy.maxParallel}, ${policy.order}, min healthy ${policy.minHealthyTimeMs / 1000} s, ` +
    `healthy deadline ${policy.healthyDeadlineMs / 1000} s, progress deadline ${policy.progressDeadlineMs / 1000} s, ` +
    `auto revert ${policy.autoRevert ? 'on' : 'off'}${policy.canary > 0 ? `, ${policy.canary} canaries` : ''}\n` +
    `started:    ${deployment.createdAt}, updated ${deployment.updatedAt}` +
    (deployment.progressDeadlineAt === null ? '' : `, progress due by ${deployment.progressDeadlineAt}`) +
    '\n' +
    formatTable(rows)
  );
}

export function formatMembers(members: readonly MemberView[]): string {
  const rows = [
    ['NAME', 'ADDRESS', 'STATE', 'CPU', 'MEMORY', 'DRIVERS', 'INCARNATION', 'LAST HEARD', 'LABELS'],
  ];
  for (const member of members) {
    rows.push([
      member.name,
      member.address,
      member.draining ? `${member.state},draining` : member.state,
      formatCores(member.cpuMillis),
      formatMebibytes(member.memoryBytes),
      member.drivers.join(','),
      String(member.incarnation),
      `${(member.lastHeardMsAgo / 1000).toFixed(1)}s ago`,
      Object.entries(member.labels)
        .map(([key, value]) => `${key}=${value}`)
        .join(','),
    ]);
  }
  return formatTable(rows);
}

export function formatStatus(view: StatusView): string {
  return (
    `node:         ${view.name} (${view.role})\n` +
    `leader:       ${view.leader?.name ?? 'none'}\n` +
    `term:         ${view.term}\n` +
    `voters:       ${view.voters.map((voter) => voter.name).join(', ')}\n` +
    `learners:     ${view.learners.map((learner) => learner.name).join(', ') || '-'}\n` +
    `commit index: ${view.commitIndex}\n` +
    (view.warning === null ? '' : `warning:      ${view.warning}\n`)
  );
}

export function formatQuota(quota: NamespacePolicySpec['quota']): string {
  if (quota === null) return 'none';
  const parts: string[] = [];
  if (quota.cpuMillis !== undefined) parts.push(`cpu ${formatCores(quota.cpuMillis)}`);
  if (quota.memoryBytes !== undefined) parts.push(`memory ${formatMebibytes(quota.memoryBytes)}`);
  if (quota.diskBytes !== undefined) parts.push(`disk ${formatMebibytes(quota.diskBytes)}`);
  for (const [kind, count] of Object.entries(quota.devices ?? {})) parts.push(`${kind} ${count}`);
  return parts.join(', ') || 'none';
}

export function formatNamespaces(policies: readonly NamespacePolicySpec[]): string {
  const rows = [['NAMESPACE', 'WEIGHT', 'QUOTA']];
  for (const policy of policies) rows.push([policy.name, String(policy.weight), formatQuota(policy.quota)]);
  return formatTable(rows);
}

export function formatNamespace(policy: NamespacePolicySpec): string {
  return `namespace ${policy.name}: weight ${policy.weight}, quota ${formatQuota(policy.quota)}\n`;
}

export function formatTokens(tokens: readonly TokenView[]): string {
  const rows = [['ACCESSOR', 'NAME', 'ROLE', 'NAMESPACES', 'CREATED', 'EXPIRES']];
  for (const token of tokens) {
    rows.push([
      token.accessorId,
      token.name,
      token.role,
      token.namespaces?.join(',') ?? '*',
      token.createdAt.slice(0, 19),
      token.expired ? 'expired' : (token.expiresAt?.slice(0, 19) ?? 'never'),
    ]);
  }
  return formatTable(rows);
}

/**
 * One line of `shoal events`: INDEX TIME TYPE, the task or node, then what happened; null for a heartbeat
 * (a person needs no line that says nothing happened).
 */
export function formatEvent(frame: EventFrame): string | null {
  const head = (event: { index: number; at: string; type: string }): string =>
    `${event.index}  ${event.at.slice(11, 23)}  ${event.type}`;
  const task = (event: { taskId: string; name: string }): string => `${event.taskId} ${event.name}`;
  switch (frame.type) {
    case 'heartbeat':
      return null;
    case 'reset':
      return `${frame.index}  reset: earlier events are gone from this node; what happened up to here is in shoal ps\n`;
    case 'error':
      return `error: ${frame.error.message}\n`;
    case 'task:submitted':
      return `${head(frame)}  ${task(frame)}  namespace ${frame.namespace}${frame.job === null ? '' : `, job ${frame.job}`}\n`;
    case 'task:assigned':
      return `${head(frame)}  ${task(frame)}  to ${frame.node}\n`;
    case 'task:state': {
      const where = frame.node === null ? '' : ` on ${frame.node}`;
      const reason = frame.reason === null ? '' : `: ${frame.reason}`;
      const exit =
        frame.exitCode === null || frame.reason?.includes('exit code') === true
          ? ''
          : ` (exit code ${frame.exitCode})`;
      return `${head(frame)}  ${task(frame)}  ${frame.state}${where}${reason}${exit}\n`;
    }
    case 'task:desired':
      return `${head(frame)}  ${task(frame)}  ${frame.desired}${frame.reason === null ? '' : `: ${frame.reason}`}\n`;
    case 'task:note':
      return `${head(frame)}  ${task(frame)}  ${frame.message}\n`;
    case 'task:health':
      return `${head(frame)}  ${task(frame)}  ${frame.health}${frame.message === '' ? '' : `: ${frame.message}`}\n`;
    case 'node:up':
      return `${head(frame)}  ${frame.node}\n`;
    case 'node:down':
      return `${head(frame)}  ${frame.node}  ${frame.reason}\n`;
    case 'node:draining':
      return `${head(frame)}  ${frame.node}  ${frame.draining ? 'draining' : 'drain cancelled'}\n`;
    case 'leader:elected':
      return `${head(frame)}  ${frame.leader}  term ${frame.term}\n`;
  }
}

export function formatFrameworks(frameworks: readonly FrameworkView[]): string {
  const rows = [['ID', 'NAME', 'ROLE', 'PRIORITY', 'CONNECTED', 'TASKS', 'UNACKED', 'EXPIRES']];
  for (const framework of frameworks)
    rows.push([
      framework.id,
      framework.name,
      framework.role,
      String(framework.priority),
      framework.connected ? 'yes' : `no, since ${framework.disconnectedAt ?? '?'}`,
      String(framework.tasks),
      String(framework.pendingUpdates),
      framework.expiresAt ?? '-',
    ]);
  return formatTable(rows);
}

export function formatFrameworkDetail(framework: FrameworkDetailView): string {
  return (
    `framework: ${framework.id} (${framework.name})\n` +
    `role:      ${framework.role} (priority ${framework.priority}, user ${framework.user})\n` +
    `connected: ${framework.connected ? 'yes' : `no, since ${framework.disconnectedAt ?? '?'}; its tasks are killed at ${framework.expiresAt ?? '?'}`}\n` +
    `failover:  ${framework.failoverTimeoutSeconds} s\n` +
    `since:     ${framework.registeredAt}\n` +
    `updates:   ${framework.pendingUpdates} not yet acknowledged\n` +
    `tasks:     ${framework.tasks} (${framework.liveTasks.length} live)\n` +
    (framework.liveTasks.length === 0 ? '' : `\n${formatTasks(framework.liveTasks)}`)
  );
}
