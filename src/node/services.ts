/**
 * The node's side of services and deployments: which instances of a service answer now (the API's
 * /v1/services and every node's DNS read the same function), and views and controls of deployments.
 * Reads after a linearizable barrier where the API asks; DNS reads this node's state as it is (a follower
 * may be a few milliseconds behind, which a DNS answer with a TTL of seconds allows).
 */
import type { Answer } from '../api/index.ts';
import {
  defaultNamespace,
  isTerminal,
  jobKey,
  needsPromotion,
  portNames,
  type ClusterState,
  type DeploymentAction,
  type DeploymentRecord,
  type Task,
} from '../cluster/index.ts';
import { ShoalError } from '../shared/index.ts';
import type { Control } from './control.ts';
import type { ServiceInstanceAddress } from './dns.ts';

export interface ServiceOperationsInit {
  readonly state: ClusterState;
  readonly control: Control;
  /** A node's name from its id (the id when unknown). */
  readonly nameOf: (nodeId: string) => string;
}

/** Whether a running task answers for its service: its checks pass, or it has none. */
export function answers(task: Task): 'healthy' | 'unchecked' | null {
  if (task.state !== 'running' || task.desired !== 'run' || task.nodeId === null) return null;
  if ((task.spec.checks ?? []).length === 0) return 'unchecked';
  return task.health?.status === 'healthy' ? 'healthy' : null;
}

/** Canaries all placed and healthy, and the rest waits for a promote. */
function waitsForPromotion(deployment: DeploymentRecord): boolean {
  if (deployment.status !== 'running' || !needsPromotion(deployment)) return false;
  return Object.values(deployment.groups).every(
    (group) =>
      group.promoted ||
      (group.canaryTaskIds.length >= group.desiredCanaries &&
        group.canaryTaskIds.every((id) => group.healthyTaskIds.includes(id))),
  );
}

/** The host part of a node's "host:port" address (IPv6 in brackets loses them). */
export function hostOf(address: string): string {
  const colon = address.lastIndexOf(':');
  const host = colon < 0 ? address : address.slice(0, colon);
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

export class ServiceOperations {
  private readonly init: ServiceOperationsInit;

  constructor(init: ServiceOperationsInit) {
    this.init = init;
  }

  /** The instances of a service that answer now, for DNS; null when there is no such service. */
  addresses(service: string, namespace: string): ServiceInstanceAddress[] | null {
    const { state } = this.init;
    // DNS hands names over in lower case; a job may have capitals.
    const name = state.serviceNameIgnoringCase(namespace, service);
    const tasks = name === null ? null : state.serviceTasks(namespace, name);
    if (tasks === null) return null;
    const found: ServiceInstanceAddress[] = [];
    for (const task of tasks) {
      const host = this.hostOfTask(task);
      if (answers(task) === null || host === null) continue;
      const ports = portNames(task.spec).flatMap((name) => {
        const port = task.hostPorts?.[name];
        return port === undefined ? [] : [{ name, port }];
      });
      found.push({ id: task.id, address: host, ports });
    }
    return found;
  }

  async services(namespace: string | null): Promise<Answer<'services'>> {
    await this.init.control.readBarrier();
    const { state } = this.init;
    const names = new Map<string, { namespace: string; name: string }>();
    for (const job of state.jobs.values())
      if (job.spec.type === 'service' || job.spec.type === 'system')
        names.set(jobKey(job.namespace, job.name), { namespace: job.namespace, name: job.name });
    for (const task of state.tasks.values()) {
      if (task.state !== 'running' || task.hostPorts === undefined) continue;
      const name = task.instance?.job ?? task.spec.job ?? task.spec.name;
      const space = task.spec.namespace ?? defaultNamespace;
      names.set(jobKey(space, name), { namespace: space, name });
    }
    return [...names.values()]
      .filter((entry) => namespace === null || entry.namespace === namespace)
      .sort((a, b) => (jobKey(a.namespace, a.name) < jobKey(b.namespace, b.name) ? -1 : 1))
      .map((entry) => this.view(entry.namespace, entry.name));
  }

  async service(namespace: string, name: string): Promise<Answer<'service'>> {
    await this.init.control.readBarrier();
    if (this.init.state.serviceTasks(namespace, name) === null)
      throw new ShoalError(
        'NOT_FOUND',
        `no service ${name} in namespace ${namespace} (a service is a job, or tasks run with --name ${name}); list them with shoal services`,
      );
    return this.view(namespace, name);
  }

  async jobDeployments(namespace: string, name: string): Promise<Answer<'jobDeployments'>> {
    await this.init.control.readBarrier();
    if (!this.init.state.jobs.has(jobKey(namespace, name)))
      throw new ShoalError('NOT_FOUND', `no job ${name} in namespace ${namespace}`);
    return this.init.state
      .deploymentsOf(namespace, name)
      .map((deployment) => this.deploymentView(deployment));
  }

  async deployment(id: string): Promise<Answer<'deployment'>> {
    await this.init.control.readBarrier();
    return this.deploymentView(this.requireDeployment(id));
  }

  async deploymentNamespace(id: string): Promise<string> {
    await this.init.control.readBarrier();
    return this.requireDeployment(id).namespace;
  }

  async promoteJob(namespace: string, name: string): Promise<Answer<'promoteJob'>> {
    await this.init.control.readBarrier();
    const deployment = this.init.state.activeDeployment(namespace, name);
    if (!deployment) throw new ShoalError('CONFLICT', `job ${name} has no running deployment to promote`);
    return this.control(deployment.id, 'promote');
  }

  async control(id: string, action: DeploymentAction): Promise<Answer<'controlDeployment'>> {
    await this.init.control.proposeOrThrow({
      type: 'controlDeployment',
      deploymentId: id,
      action,
      atMs: Date.now(),
    });
    await this.init.control.readBarrier();
    return this.deploymentView(this.requireDeployment(id));
  }

  private requireDeployment(id: string): DeploymentRecord {
    const deployment = this.init.state.deployments.get(id);
    if (!deployment)
      throw new ShoalError('NOT_FOUND', `no deployment ${id}; list a job's with shoal deployment status JOB`);
    return deployment;
  }

  private hostOfTask(task: Task): string | null {
    const node = task.nodeId === null ? undefined : this.init.state.nodes.get(task.nodeId);
    return node === undefined ? null : hostOf(node.address);
  }

  private view(namespace: string, name: string): Answer<'service'> {
    const tasks = this.init.state.serviceTasks(namespace, name) ?? [];
    const instances: Answer<'service'>['instances'] = [];
    for (const task of tasks) {
      const health = answers(task);
      const host = this.hostOfTask(task);
      if (health === null || host === null || task.nodeId === null) continue;
      const ports: Record<string, string> = {};
      for (const portName of portNames(task.spec)) {
        const port = task.hostPorts?.[portName];
        if (port !== undefined) ports[portName] = `${host}:${port}`;
      }
      instances.push({
        taskId: task.id,
        name: task.spec.name,
        node: this.init.nameOf(task.nodeId),
        host,
        ports,
        health,
      });
    }
    return { namespace, name, running: tasks.length, instances };
  }

  private deploymentView(deployment: DeploymentRecord): Answer<'deployment'> {
    const tasks = this.init.state.deploymentTasks(deployment);
    return {
      id: deployment.id,
      namespace: deployment.namespace,
      job: deployment.job,
      jobVersion: deployment.jobVersion,
      stableVersion: deployment.stableVersion,
      status: deployment.status,
      statusReason: waitsForPromotion(deployment)
        ? `canaries healthy: waiting for shoal job promote ${deployment.job}`
        : deployment.statusReason,
      policy: { ...deployment.policy },
      groups: Object.entries(deployment.groups).map(([name, group]) => {
        const live = tasks.filter(
          (task) => task.group === name && !isTerminal(task.state) && task.desired !== 'kill',
        );
        return {
          name,
          desiredTotal: group.desiredTotal,
          desiredCanaries: group.desiredCanaries,
          placedCanaries: group.canaryTaskIds.length,
          promoted: group.promoted,
          healthy: group.healthyTaskIds.length,
          unhealthy: group.unhealthy.length,
          current: live.filter((task) => task.current).length,
          old: live.filter((task) => !task.current).length,
        };
      }),
      createdAt: new Date(deployment.createdAtMs).toISOString(),
      updatedAt: new Date(deployment.updatedAtMs).toISOString(),
      progressDeadlineAt:
        deployment.progressDeadlineAtMs === null
          ? null
          : new Date(deployment.progressDeadlineAtMs).toISOString(),
      revertedToVersion: deployment.revertedToVersion ?? null,
    };
  }
}
