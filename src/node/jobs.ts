/**
 * The node's side of the jobs API: views of jobs read after a linearizable barrier, changes proposed
 * through the leader, and `job plan`, a dry run on a copy of the state this node holds after the
 * barrier (so the plan sees every committed change, and the real state is never touched).
 */
import type { Answer } from '../api/index.ts';
import {
  ClusterState,
  diffJobSpecs,
  isTerminal,
  jobGroups,
  jobKey,
  nextLaunchMs,
  type JobRecord,
  type JobSpec,
  type Task,
} from '../cluster/index.ts';
import { ShoalError } from '../shared/index.ts';
import type { Control } from './control.ts';

export interface JobOperationsInit {
  readonly state: ClusterState;
  readonly control: Control;
  /** A node's name from its id (the id when unknown). */
  readonly nameOf: (nodeId: string) => string;
}

export class JobOperations {
  private readonly init: JobOperationsInit;

  constructor(init: JobOperationsInit) {
    this.init = init;
  }

  async list(namespace: string | null): Promise<Answer<'jobs'>> {
    await this.init.control.readBarrier();
    const { state } = this.init;
    return [...state.jobs.values()]
      .filter((job) => namespace === null || job.namespace === namespace)
      .sort((a, b) => (a.namespace + '/' + a.name < b.namespace + '/' + b.name ? -1 : 1))
      .map((job) => jobView(job, state.jobTasks(job.namespace, job.name), Date.now()));
  }

  async detail(namespace: string, name: string): Promise<Answer<'job'>> {
    await this.init.control.readBarrier();
    const job = this.requireJob(namespace, name);
    const tasks = this.init.state.jobTasks(namespace, name);
    return {
      ...jobView(job, tasks, Date.now()),
      spec: job.spec,
      instances: tasks.flatMap((task) =>
        task.instance
          ? [
              {
                id: task.id,
                group: task.instance.group,
                task: task.instance.task,
                slot: task.instance.slot,
                version: task.instance.version,
                state: task.state,
                node: task.nodeId === null ? null : this.init.nameOf(task.nodeId),
                reason: task.reason,
                desired: isTerminal(task.state) ? 'none' : task.desired,
              },
            ]
          : [],
      ),
    };
  }

  async versions(namespace: string, name: string): Promise<Answer<'jobVersions'>> {
    await this.init.control.readBarrier();
    return this.requireJob(namespace, name).history.map((record) => ({
      version: record.version,
      at: new Date(record.atMs).toISOString(),
      index: record.index,
      spec: record.spec,
    }));
  }

  async apply(job: JobSpec, checkIndex: number | null): Promise<Answer<'applyJob'>> {
    // The version before, as of every committed change: `changed` compares against it.
    await this.init.control.readBarrier();
    const before = this.init.state.jobs.get(jobKey(job.namespace, job.name));
    const versionBefore = before?.version ?? 0;
    const stoppedBefore = before?.stopped ?? false;
    await this.init.control.proposeOrThrow({
      type: 'putJob',
      job,
      ...(checkIndex === null ? {} : { checkIndex }),
      atMs: Date.now(),
    });
    await this.init.control.readBarrier();
    const after = this.requireJob(job.namespace ?? 'default', job.name);
    return {
      namespace: after.namespace,
      name: after.name,
      version: after.version,
      modifyIndex: after.modifyIndex,
      changed: after.version !== versionBefore || stoppedBefore !== after.stopped,
    };
  }

  async revert(
    namespace: string,
    name: string,
    version: number,
    checkIndex: number | null,
  ): Promise<Answer<'revertJob'>> {
    await this.init.control.readBarrier();
    const job = this.requireJob(namespace, name);
    const record = job.history.find((candidate) => candidate.version === version);
    if (!record)
      throw new ShoalError(
        'NOT_FOUND',
        `job ${name} keeps versions ${job.history.map((r) => r.version).join(', ')}; no version ${version}`,
      );
    return this.apply(record.spec, checkIndex ?? job.modifyIndex);
  }

  async stop(namespace: string, name: string, purge: boolean): Promise<Answer<'stopJob'>> {
    await this.init.control.readBarrier();
    const job = this.requireJob(namespace, name);
    await this.init.control.proposeOrThrow({ type: 'stopJob', namespace, name, purge, atMs: Date.now() });
    return {
      namespace,
      name,
      version: job.version,
      modifyIndex: this.init.state.jobs.get(jobKey(namespace, name))?.modifyIndex ?? job.modifyIndex,
      changed: !job.stopped || purge,
    };
  }

  /**
   * What applying `job` would do now: the diff against the live version, and the instances it would start
   * (each with the node it fits on, or why it would wait) and stop. Computed by applying the job to a copy
   * of this node's state after a read barrier.
   */
  async plan(job: JobSpec): Promise<Answer<'planJob'>> {
    await this.init.control.readBarrier();
    const { state } = this.init;
    const live = state.jobs.get(jobKey(job.namespace, job.name));
    const copy = new ClusterState();
    copy.restore(state.toSnapshot());
    const atMs = Date.now();
    const result = copy.apply(state.appliedIndex + 1, { type: 'putJob', job, atMs });
    if (!result.ok) throw new ShoalError(result.code, result.message);
    const created = [...copy.jobEffects.created];
    const stopping = [...copy.jobEffects.stopping];
    const planned = copy.jobs.get(jobKey(job.namespace, job.name));
    const placements = copy.previewPlacements(created, atMs);
    const instanceOf = (task: Task | undefined): { group: string; slot: number } => ({
      group: task?.instance?.group ?? '',
      slot: task?.instance?.slot ?? 0,
    });
    return {
      namespace: job.namespace ?? 'default',
      name: job.name,
      modifyIndex: live?.modifyIndex ?? 0,
      version: live?.version ?? 0,
      nextVersion: planned?.version ?? 1,
      changed: (planned?.version ?? 1) !== (live?.version ?? 0) || live?.stopped === true,
      diff: diffJobSpecs(live?.spec, job),
      start: created.map((id) => {
        const task = copy.tasks.get(id);
        const placement = placements.get(id);
        return {
          ...instanceOf(task),
          reason:
            task?.events
              .find((event) => event.message.startsWith(`${job.name} v`))
              ?.message.replace(/^[^:]*: /, '') ?? 'new instance',
          node: placement?.node ?? null,
          waits: placement?.waits ?? (task?.state === 'pending' ? 'waits for its turn' : null),
        };
      }),
      stop: stopping.map((id) => {
        const task = state.tasks.get(id);
        return {
          id,
          ...instanceOf(task),
          node: task?.nodeId == null ? null : this.init.nameOf(task.nodeId),
          reason:
            copy.tasks
              .get(id)
              ?.events.find((event) => event.message.startsWith('stopping: '))
              ?.message.slice(10) ?? 'stopped',
        };
      }),
    };
  }

  private requireJob(namespace: string, name: string): JobRecord {
    const job = this.init.state.jobs.get(jobKey(namespace, name));
    if (!job)
      throw new ShoalError(
        'NOT_FOUND',
        `no job ${name} in namespace ${namespace}; list them with shoal job status`,
      );
    return job;
  }
}

/** A job's summary: its version, status and instances by state. */
export function jobView(job: JobRecord, tasks: readonly Task[], nowMs: number): Answer<'jobs'>[number] {
  const states: Record<string, number> = {};
  const byGroup = new Map<string, Record<string, number>>();
  for (const task of tasks) {
    if (!task.instance) continue;
    states[task.state] = (states[task.state] ?? 0) + 1;
    const group = byGroup.get(task.instance.group) ?? {};
    group[task.state] = (group[task.state] ?? 0) + 1;
    byGroup.set(task.instance.group, group);
  }
  const live = tasks.some((task) => task.instance !== undefined && !isTerminal(task.state));
  const periodic = job.spec.periodic;
  const next =
    periodic === undefined || job.stopped
      ? null
      : nextLaunchMs(periodic, Math.max(nowMs, job.lastLaunchMs ?? 0));
  return {
    namespace: job.namespace,
    name: job.name,
    type: job.spec.type,
    version: job.version,
    status: job.stopped
      ? 'stopped'
      : job.spec.type === 'batch' && !live && tasks.length > 0
        ? 'complete'
        : 'running',
    modifyIndex: job.modifyIndex,
    createIndex: job.createIndex,
    updatedAt: new Date(job.updatedAtMs).toISOString(),
    states,
    groups: jobGroups(job.spec).map((group) => ({
      name: group.name,
      count: group.count,
      states: byGroup.get(group.name) ?? {},
    })),
    nextLaunchAt: next === null ? null : new Date(next).toISOString(),
    lastLaunchAt: job.lastLaunchMs === null ? null : new Date(job.lastLaunchMs).toISOString(),
    parent: job.parent ?? null,
  };
}
