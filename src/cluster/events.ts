/**
 * What happened, as events: every applied command turns into zero or more events, each stamped with the
 * Raft index of the entry that caused it, from which `GET /v1/events` streams (node/events.ts keeps them).
 * Events are not replicated: every node applies the same log to the same state and so derives the same
 * task and node events. Leader events are observed by each node for itself and are not derived here.
 *
 * In: the command, what the tasks and nodes it can touch looked like before it was applied (eventBasis,
 * called just before ClusterState.apply), and the state after. Out: the events, in the order the changes
 * happened. Pure: no clock (times come from the commands), no I/O; the state is only read.
 */
import * as z from 'zod/mini';
import { defaultNamespace } from '../allocator/index.ts';
import type { ClusterNode, Command } from './command.ts';
import { taskStates, type Task, type TaskEventRecord, type TaskState } from './task.ts';

/** Fields every task event carries: which task, and where it stands after the change. */
const taskFields = {
  /** ISO 8601 time, from the command (its proposer's clock). */
  at: z.string(),
  taskId: z.string(),
  name: z.string(),
  namespace: z.string(),
  job: z.nullable(z.string()),
  /** The task's observed state once the change happened. */
  state: z.enum(taskStates),
  /** 0 for the first run, +1 per restart. */
  attempt: z.int(),
};

const nodeFields = {
  at: z.string(),
  nodeId: z.string(),
  /** The node's name. */
  node: z.string(),
};

/** The Raft index of the entry that caused the event: first in every event, then its type. */
const index = z.int();

/** One event, keyed on `type` (noun:verb). */
export const clusterEventSchema = z.discriminatedUnion('type', [
  /** A task was accepted into the queue. */
  z.object({ index, type: z.literal('task:submitted'), ...taskFields }),
  z.object({ index, type: z.literal('task:assigned'), ...taskFields, nodeId: z.string(), node: z.string() }),
  /** A new observed state: starting, running, an end (with its reason and exit code), or pending again. */
  z.object({
    index,
    type: z.literal('task:state'),
    ...taskFields,
    nodeId: z.nullable(z.string()),
    node: z.nullable(z.string()),
    reason: z.nullable(z.string()),
    exitCode: z.nullable(z.int()),
  }),
  /** The cluster wants the task stopped: killed for good, moved off a draining node, or preempted. */
  z.object({
    index,
    type: z.literal('task:desired'),
    ...taskFields,
    desired: z.enum(['kill', 'move', 'preempt']),
    reason: z.nullable(z.string()),
  }),
  /** Its health checks' verdict changed: healthy, or unhealthy and why. */
  z.object({
    index,
    type: z.literal('task:health'),
    ...taskFields,
    health: z.enum(['healthy', 'unhealthy']),
    message: z.string(),
  }),
  /** What the task's agent saw while running it (an image pull, a limit it could not enforce). */
  z.object({ index, type: z.literal('task:note'), ...taskFields, message: z.string() }),
  /** A node joined, or came back after being down. */
  z.object({ index, type: z.literal('node:up'), ...nodeFields }),
  z.object({ index, type: z.literal('node:down'), ...nodeFields, reason: z.string() }),
  /** A drain began (true) or was cancelled (false). */
  z.object({ index, type: z.literal('node:draining'), ...nodeFields, draining: z.boolean() }),
  /**
   * A new leader, as the node that serves the stream saw it (not from the log: nodes see it at different
   * times). Its index is the last entry that node had applied then.
   */
  z.object({
    index,
    type: z.literal('leader:elected'),
    at: z.string(),
    term: z.int(),
    leaderId: z.string(),
    leader: z.string(),
  }),
]);

export type ClusterEvent = z.infer<typeof clusterEventSchema>;
export type ClusterEventType = ClusterEvent['type'];
type TaskEvent = Extract<ClusterEvent, { taskId: string }>;

/** Which events a reader wants; absent fields match all. Node and leader events are of no task or namespace. */
export interface EventFilter {
  readonly task?: string;
  readonly namespace?: string;
}

export function eventMatches(event: ClusterEvent, filter: EventFilter): boolean {
  if (filter.task !== undefined && (!('taskId' in event) || event.taskId !== filter.task)) return false;
  if (filter.namespace !== undefined && (!('namespace' in event) || event.namespace !== filter.namespace))
    return false;
  return true;
}

/** What the derivation reads of the state after a command: ClusterState is one. */
export interface EventSource {
  readonly tasks: ReadonlyMap<string, Task>;
  readonly nodes: ReadonlyMap<string, ClusterNode>;
  liveTasksOn(nodeId: string): readonly Task[];
  /** Tasks a job's reconciliation created, and ones it began to stop, while applying the command. */
  readonly jobEffects?: { readonly created: readonly string[]; readonly stopping: readonly string[] };
  /** The live tasks of each framework (killed when it goes). */
  readonly frameworks?: { liveClusterTaskIds(frameworkId: string): string[] };
}

/** A task as it was before the command, in what events compare. */
interface TaskBefore {
  readonly state: TaskState;
  readonly desired: Task['desired'];
  readonly nodeId: string | null;
  readonly attempt: number;
  /** Its health's status and message, as one text to compare ('' without one). */
  readonly health: string;
  /** Its event records (the objects themselves): a record not among them after the command is new. */
  readonly records: ReadonlySet<TaskEventRecord>;
}

interface NodeBefore {
  readonly status: ClusterNode['status'];
  readonly draining: boolean;
}

/** The tasks and nodes a command can change, as they were before it applied; absent: did not exist. */
export interface EventBasis {
  readonly tasks: ReadonlyMap<string, TaskBefore | undefined>;
  readonly nodes: ReadonlyMap<string, NodeBefore | undefined>;
}

/** Takes the basis of a command's events: call it just before the command is applied. */
export function eventBasis(state: EventSource, command: Command): EventBasis {
  const tasks = new Map<string, TaskBefore | undefined>();
  const nodes = new Map<string, NodeBefore | undefined>();
  const task = (id: string): void => {
    if (tasks.has(id)) return;
    const current = state.tasks.get(id);
    tasks.set(
      id,
      current && {
        state: current.state,
        desired: current.desired,
        nodeId: current.nodeId,
        attempt: current.attempt,
        health: healthText(current),
        // Only an agent's batch adds notes; other commands need not copy the records.
        records: command.type === 'taskEvents' ? new Set(current.events) : new Set(),
      },
    );
  };
  const node = (id: string): void => {
    const current = state.nodes.get(id);
    nodes.set(id, current && { status: current.status, draining: current.draining });
  };
  switch (command.type) {
    case 'submitTask':
      task(command.id);
      break;
    case 'submitTasks':
    case 'launchFrameworkTasks':
      for (const { id } of command.tasks) task(id);
      break;
    case 'expireFramework':
    case 'teardownFramework':
      // Its tasks are killed with it.
      for (const id of state.frameworks?.liveClusterTaskIds(command.frameworkId) ?? []) task(id);
      break;
    case 'subscribeFramework':
    case 'disconnectFramework':
    case 'acknowledgeFrameworkUpdate':
      break;
    case 'assignTasks':
      // In the order the state applies them: evictions first.
      for (const { taskId } of command.preemptions ?? []) task(taskId);
      for (const { taskId } of command.assignments) task(taskId);
      break;
    case 'reportTasks':
      for (const { taskId } of command.reports) task(taskId);
      break;
    case 'reportTask':
    case 'taskEvents':
    case 'taskHealth':
    case 'killTask':
      task(command.taskId);
      break;
    case 'nodeDown':
    case 'drainNode':
      node(command.nodeId);
      for (const live of state.liveTasksOn(command.nodeId)) task(live.id);
      break;
    case 'upsertNode':
      node(command.node.id);
      break;
    case 'setNamespace':
    case 'setTaskLimits':
    case 'createToken':
    case 'revokeToken':
    case 'setClusterCa':
      break;
    case 'restoreBackup':
      // The whole state changes: readers get a reset (the node's event hub), not an event per task.
      break;
    case 'putJob':
    case 'stopJob':
    case 'launchPeriodic':
    case 'deploymentProgress':
    case 'controlDeployment':
      // The tasks a job's reconciliation starts and stops: see jobEffects below.
      break;
  }
  return { tasks, nodes };
}

/**
 * The events of one applied command, in the order its changes happened: a node's own change before what
 * it did to its tasks, and for each task a wish (kill, move, preempt) before the state change it caused.
 */
export function deriveEvents(
  index: number,
  command: Command,
  basis: EventBasis,
  state: EventSource,
): ClusterEvent[] {
  const events: ClusterEvent[] = [];
  // Every command but an agent's batch carries its time; a batch's notes carry their own.
  const at = iso('atMs' in command ? command.atMs : 0);
  for (const [nodeId, before] of basis.nodes) {
    const node = state.nodes.get(nodeId);
    if (!node) continue;
    const fields = { at, nodeId, node: node.name };
    if (node.status === 'up' && before?.status !== 'up') events.push({ index, type: 'node:up', ...fields });
    if (node.status === 'down' && before?.status === 'up' && command.type === 'nodeDown')
      events.push({ index, type: 'node:down', ...fields, reason: command.reason });
    if (before !== undefined && node.draining !== before.draining)
      events.push({ index, type: 'node:draining', ...fields, draining: node.draining });
  }
  for (const [taskId, before] of basis.tasks) {
    const task = state.tasks.get(taskId);
    if (task) events.push(...taskEvents(index, at, command, before, task, state));
  }
  // What the jobs' reconciler did in the same step: new instances, and instances it stops.
  for (const taskId of state.jobEffects?.stopping ?? []) {
    const task = state.tasks.get(taskId);
    if (!task || basis.tasks.has(taskId)) continue;
    // A pending instance is killed at once; a placed one stays where it is until its node reports.
    const was = task.state === 'killed' && task.nodeId === null ? 'pending' : task.state;
    const before: TaskBefore = {
      state: was,
      desired: 'run',
      nodeId: task.nodeId,
      attempt: task.attempt,
      health: healthText(task),
      records: new Set(),
    };
    events.push(...taskEvents(index, at, command, before, task, state));
  }
  for (const taskId of state.jobEffects?.created ?? []) {
    const task = state.tasks.get(taskId);
    if (task && !basis.tasks.has(taskId))
      events.push(...taskEvents(index, at, command, undefined, task, state));
  }
  return events;
}

function taskEvents(
  index: number,
  at: string,
  command: Command,
  before: TaskBefore | undefined,
  task: Task,
  state: EventSource,
): TaskEvent[] {
  const fields = {
    at,
    taskId: task.id,
    name: task.spec.name,
    namespace: task.spec.namespace ?? defaultNamespace,
    job: task.spec.job ?? null,
    state: task.state,
    attempt: task.attempt,
  };
  const nodeName = (nodeId: string | null): string | null =>
    nodeId === null ? null : (state.nodes.get(nodeId)?.name ?? nodeId);
  if (before === undefined) return [{ index, type: 'task:submitted', ...fields }];
  const events: TaskEvent[] = [];
  if (command.type === 'taskEvents') {
    // The records this batch added (the state drops a batch about another run, and cuts long messages).
    for (const record of task.events) {
      if (before.records.has(record)) continue;
      events.push({ index, type: 'task:note', ...fields, at: iso(record.atMs), message: record.message });
    }
  }
  if (command.type === 'taskHealth' && task.health !== undefined && healthText(task) !== before.health)
    events.push({
      index,
      type: 'task:health',
      ...fields,
      health: task.health.status,
      message: task.health.message,
    });
  if (task.desired !== before.desired && task.desired !== 'run') {
    // The wish came first: the task stood where it was before the command.
    events.push({
      index,
      type: 'task:desired',
      ...fields,
      state: before.state,
      attempt: before.attempt,
      desired: task.desired,
      reason: task.desired === 'preempt' ? (task.preemptedBy ?? null) : null,
    });
  }
  const end = runEnd(command, task.id);
  if (task.attempt > before.attempt) {
    // The run ended and the task was queued again within this command (a restart, a move, a preemption):
    // the end first, as the command gave it, then the task pending again.
    if (end !== null) {
      events.push({
        index,
        type: 'task:state',
        ...fields,
        state: end.state,
        attempt: before.attempt,
        nodeId: before.nodeId,
        node: nodeName(before.nodeId),
        reason: end.reason,
        exitCode: end.exitCode,
      });
    }
  } else if (task.state === before.state) {
    return events;
  }
  if (task.state === 'assigned' && task.nodeId !== null) {
    const node = nodeName(task.nodeId) ?? task.nodeId;
    events.push({ index, type: 'task:assigned', ...fields, nodeId: task.nodeId, node });
  } else {
    events.push({
      index,
      type: 'task:state',
      ...fields,
      nodeId: task.nodeId,
      node: nodeName(task.nodeId),
      reason: task.reason,
      // Only a report carries an exit code; the task's own field may still hold an earlier run's.
      exitCode: task.attempt === before.attempt ? (end?.exitCode ?? null) : null,
    });
  }
  return events;
}

function healthText(task: Task): string {
  return task.health === undefined ? '' : `${task.health.status}\u0000${task.health.message}`;
}

/**
 * How a task's run ended, by the command that ended it: a report (a batch's last one about the task), or
 * its node going down.
 */
function runEnd(
  command: Command,
  taskId: string,
): { readonly state: TaskState; readonly reason: string | null; readonly exitCode: number | null } | null {
  if (command.type === 'reportTask')
    return command.taskId === taskId
      ? { state: command.state, reason: command.reason, exitCode: command.exitCode }
      : null;
  if (command.type === 'reportTasks') {
    const report = command.reports.findLast((candidate) => candidate.taskId === taskId);
    return report === undefined
      ? null
      : { state: report.state, reason: report.reason, exitCode: report.exitCode };
  }
  if (command.type === 'nodeDown') return { state: 'lost', reason: command.reason, exitCode: null };
  return null;
}

function iso(atMs: number): string {
  return new Date(atMs).toISOString();
}
