/**
 * What the cluster tells a task about itself through its environment (Nomad's NOMAD_* variables, in our
 * names): who it is, where it runs, and for each named port the port to bind, the host port, and the
 * address others reach it at. Pure: from the task's committed record and the node.
 */
import { networkOf, portNames, type Task } from '../cluster/index.ts';

/** Where the task runs: the node's name and the IPv4 address its ports are published on. */
export interface TaskNode {
  readonly name: string;
  readonly host: string;
  /** The device files behind each kind's slots, in slot order (NodeConfig.deviceFiles). */
  readonly deviceFiles?: Readonly<Record<string, readonly string[]>>;
}

/**
 * The device files a task holds on its node, by kind, from its slots: the node's files in those places, or
 * nothing for a kind the node declared by count only.
 */
export function taskDeviceFiles(task: Task, node: TaskNode): { kind: string; path: string }[] {
  return Object.entries(task.deviceSlots ?? {}).flatMap(([kind, slots]) => {
    const files = node.deviceFiles?.[kind];
    if (files === undefined) return [];
    return slots.flatMap((slot) => {
      const path = files[slot];
      return path === undefined ? [] : [{ kind, path }];
    });
  });
}

/** A port's name as it appears in variable names: upper case, anything but letters and digits as "_". */
export function portVariableName(name: string): string {
  return name.toUpperCase().replace(/[^A-Z0-9]/g, '_');
}

/**
 * The port a task binds inside itself for a named port: on docker's bridge the container port it is
 * published to (its target, else the host port); otherwise the host port itself.
 */
export function innerPort(task: Task, name: string): number | undefined {
  const hostPort = task.hostPorts?.[name];
  if (hostPort === undefined) return undefined;
  if (task.spec.driver === 'docker' && networkOf(task.spec) === 'bridge')
    return task.spec.portTargets?.[name] ?? hostPort;
  return hostPort;
}

/**
 * The SHOAL_* variables of a task: SHOAL_TASK_ID, SHOAL_TASK_NAME, SHOAL_JOB (empty for a task of no job),
 * SHOAL_NAMESPACE, SHOAL_NODE, SHOAL_TASK_DIR, and per port SHOAL_PORT_<NAME> (bind this),
 * SHOAL_HOST_PORT_<NAME> and SHOAL_ADDR_<NAME> (host:port, for others), and per device kind it holds
 * SHOAL_DEVICES_<KIND> (its device files, comma separated). They override the spec's own env.
 */
export function taskEnvironment(task: Task, node: TaskNode, taskDir: string): Record<string, string> {
  const env: Record<string, string> = {
    SHOAL_TASK_ID: task.id,
    SHOAL_TASK_NAME: task.spec.name,
    SHOAL_JOB: task.instance?.job ?? task.spec.job ?? '',
    SHOAL_NAMESPACE: task.spec.namespace ?? 'default',
    SHOAL_NODE: node.name,
    SHOAL_TASK_DIR: taskDir,
  };
  // Which devices are the task's: their files, or their slot numbers where the node named no files
  // (as CUDA_VISIBLE_DEVICES takes indices).
  for (const [kind, slots] of Object.entries(task.deviceSlots ?? {})) {
    const files = node.deviceFiles?.[kind];
    env[`SHOAL_DEVICES_${portVariableName(kind)}`] = slots
      .map((slot) => (files === undefined ? String(slot) : (files[slot] ?? String(slot))))
      .join(',');
  }
  for (const name of portNames(task.spec)) {
    const hostPort = task.hostPorts?.[name];
    const inner = innerPort(task, name);
    if (hostPort === undefined || inner === undefined) continue;
    const variable = portVariableName(name);
    env[`SHOAL_PORT_${variable}`] = String(inner);
    env[`SHOAL_HOST_PORT_${variable}`] = String(hostPort);
    env[`SHOAL_ADDR_${variable}`] = `${node.host}:${hostPort}`;
  }
  return env;
}
