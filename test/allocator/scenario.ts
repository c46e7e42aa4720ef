/**
 * Random allocator inputs from a seed, and an independent reading of what a plan must satisfy. The checks
 * do not reuse allocator code (labels, resources, victim sets are re-derived here) so a bug there cannot
 * hide itself.
 */
import type {
  AllocatorInput,
  AllocatorNode,
  AllocatorTask,
  LabelConstraint,
  NamespacePolicy,
  Plan,
  Resources,
  RunningTask,
} from '../../src/allocator/index.ts';
import type { Random } from '../../src/shared/random.ts';
// The default gap is a contract, not logic: the checks take it from its one home.
import { preemptionPriorityGapDefault } from '../../src/allocator/index.ts';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export function pick<T>(random: Random, items: readonly T[]): T {
  const item = items[random.int(0, items.length)];
  if (item === undefined) throw new Error('pick from an empty list');
  return item;
}

export function chance(random: Random, p: number): boolean {
  return random.next() < p;
}

export function shuffled<T>(random: Random, items: readonly T[]): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = random.int(0, i + 1);
    const a = copy[i];
    const b = copy[j];
    if (a === undefined || b === undefined) continue;
    copy[i] = b;
    copy[j] = a;
  }
  return copy;
}

// ---- resources, read independently --------------------------------------------------------------------

export interface Amounts {
  cpu: number;
  memory: number;
  disk: number;
  devices: Record<string, number>;
}

export function amounts(r: Resources): Amounts {
  return {
    cpu: r.cpuMillis,
    memory: r.memoryBytes,
    disk: r.diskBytes ?? 0,
    devices: { ...(r.devices ?? {}) },
  };
}

export function zero(): Amounts {
  return { cpu: 0, memory: 0, disk: 0, devices: {} };
}

export function add(a: Amounts, b: Amounts, sign = 1): Amounts {
  const devices = { ...a.devices };
  for (const [kind, count] of Object.entries(b.devices)) devices[kind] = (devices[kind] ?? 0) + sign * count;
  return {
    cpu: a.cpu + sign * b.cpu,
    memory: a.memory + sign * b.memory,
    disk: a.disk + sign * b.disk,
    devices,
  };
}

/** `need` fits in `room` on every resource. */
export function within(need: Amounts, room: Amounts): boolean {
  if (need.cpu > room.cpu || need.memory > room.memory || need.disk > room.disk) return false;
  for (const [kind, count] of Object.entries(need.devices))
    if (count > (room.devices[kind] ?? 0)) return false;
  return true;
}

export function labelHolds(labels: Readonly<Record<string, string>>, c: LabelConstraint): boolean {
  const value = Object.hasOwn(labels, c.key) ? labels[c.key] : undefined;
  switch (c.operator) {
    case '=':
      return value === c.value;
    case '!=':
      return value !== c.value;
    case 'in':
      return value !== undefined && c.values.includes(value);
    case 'notIn':
      return value === undefined || !c.values.includes(value);
    case 'regex':
      return value !== undefined && new RegExp(c.pattern).test(value);
  }
}

export function eligible(node: AllocatorNode, task: AllocatorTask): boolean {
  if (node.schedulable === false || !node.drivers.includes(task.driver)) return false;
  for (const [key, value] of Object.entries(task.constraints))
    if (!labelHolds(node.labels, { key, operator: '=', value })) return false;
  for (const c of task.labelConstraints ?? []) if (!labelHolds(node.labels, c)) return false;
  return true;
}

// ---- generation ---------------------------------------------------------------------------------------

export interface ScenarioOptions {
  /** Ports, distinct nodes, affinities, spread, gangs, nominations, quotas, caps, devices. */
  readonly features: boolean;
  readonly nodesMax: number;
  readonly pendingMax: number;
}

const zones = ['a', 'b', 'c'];
const priorities = [10, 30, 50, 70, 90];
const namespaces = ['default', 'ns-a', 'ns-b'];

function randomRequest(random: Random, features: boolean): Resources {
  const cpuMillis = pick(random, [250, 500, 1000, 2000, 3000]);
  const memoryBytes = pick(random, [128 * MiB, 512 * MiB, GiB, 2 * GiB]);
  if (!features) return { cpuMillis, memoryBytes };
  const request: {
    cpuMillis: number;
    memoryBytes: number;
    diskBytes?: number;
    devices?: Record<string, number>;
  } = { cpuMillis, memoryBytes };
  if (chance(random, 0.2)) request.diskBytes = pick(random, [GiB, 10 * GiB]);
  if (chance(random, 0.1)) request.devices = { gpu: pick(random, [1, 2]) };
  else if (chance(random, 0.03)) request.devices = { fpga: 1 };
  return request;
}

function randomConstraint(random: Random): LabelConstraint {
  const key = pick(random, ['zone', 'rack', 'ssd']);
  const value = key === 'zone' ? pick(random, zones) : key === 'rack' ? `r${random.int(1, 5)}` : 'true';
  switch (random.int(0, 5)) {
    case 0:
      return { key, operator: '=', value };
    case 1:
      return { key, operator: '!=', value };
    case 2:
      return { key, operator: 'in', values: [value, pick(random, zones)] };
    case 3:
      return { key, operator: 'notIn', values: [value] };
    default:
      return { key, operator: 'regex', pattern: key === 'rack' ? '^r[12]$' : '^[ab]' };
  }
}

export function randomNode(random: Random, id: string, features: boolean): AllocatorNode {
  const capacity: {
    cpuMillis: number;
    memoryBytes: number;
    diskBytes?: number;
    devices?: Record<string, number>;
  } = {
    cpuMillis: pick(random, [1000, 2000, 4000, 8000]),
    memoryBytes: pick(random, [GiB, 2 * GiB, 4 * GiB, 8 * GiB]),
  };
  if (features) {
    capacity.diskBytes = pick(random, [0, 10 * GiB, 50 * GiB]);
    const gpus = pick(random, [0, 0, 1, 2]);
    // A second kind, rarer, so histories also learn a device kind late.
    const fpgas = chance(random, 0.05) ? 1 : 0;
    if (gpus + fpgas > 0)
      capacity.devices = { ...(gpus > 0 ? { gpu: gpus } : {}), ...(fpgas > 0 ? { fpga: 1 } : {}) };
  }
  const labels: Record<string, string> = {};
  if (chance(random, 0.9)) labels.zone = pick(random, zones);
  labels.rack = `r${random.int(1, 5)}`;
  if (chance(random, 0.3)) labels.ssd = 'true';
  const node: { -readonly [K in keyof AllocatorNode]: AllocatorNode[K] } = {
    id,
    capacity,
    free: capacity,
    labels,
    drivers: pick(random, [['exec', 'docker'], ['exec', 'docker'], ['exec'], ['docker']]),
  };
  if (features && chance(random, 0.2)) node.portsInUse = [80];
  if (chance(random, 0.1)) node.schedulable = false;
  return node;
}

export function randomPending(
  random: Random,
  id: string,
  submitIndex: number,
  nodeIds: readonly string[],
  features: boolean,
): AllocatorTask {
  const task: { -readonly [K in keyof AllocatorTask]: AllocatorTask[K] } = {
    id,
    priority: pick(random, priorities),
    submitIndex,
    driver: chance(random, 0.8) ? 'exec' : 'docker',
    request: randomRequest(random, features),
    constraints: chance(random, 0.2) ? { zone: pick(random, zones) } : {},
  };
  if (chance(random, 0.2)) task.labelConstraints = [randomConstraint(random)];
  if (chance(random, 0.6)) task.namespace = pick(random, namespaces);
  if (chance(random, 0.6)) task.job = `j${random.int(1, 7)}`;
  if (!features) return task;
  // Distinct nodes is a property of a job (every replica carries it), as the leader will pass it.
  if (task.job === 'j5' || task.job === 'j6') task.distinctNodes = true;
  if (chance(random, 0.1)) task.ports = { http: pick(random, [80, 8080, 9090]) };
  if (chance(random, 0.15))
    task.affinities = [{ constraint: randomConstraint(random), weight: pick(random, [-50, 20, 60]) }];
  if (task.job !== undefined && chance(random, 0.15)) task.spreadOver = 'zone';
  if (chance(random, 0.15)) task.packing = 'spread';
  if (chance(random, 0.08)) task.group = `g${random.int(1, 3)}`;
  else if (chance(random, 0.05) && nodeIds.length > 0) task.nominatedNodeId = pick(random, nodeIds);
  return task;
}

/** A cluster with running tasks (consistent with each node's free), a queue and policies. */
export function randomInput(random: Random, options: ScenarioOptions): AllocatorInput {
  const { features } = options;
  const nodeCount = random.int(1, options.nodesMax + 1);
  const nodes: AllocatorNode[] = [];
  const running: RunningTask[] = [];
  let taskNumber = 0;
  for (let i = 0; i < nodeCount; i++) {
    const base = randomNode(random, `n${String(i).padStart(2, '0')}`, features);
    let free = amounts(base.capacity);
    const ports = [...(base.portsInUse ?? [])];
    const count = random.int(0, 5);
    for (let k = 0; k < count; k++) {
      const request = randomRequest(random, features);
      if (!within(amounts(request), free)) continue;
      free = add(free, amounts(request), -1);
      const task: { -readonly [K in keyof RunningTask]: RunningTask[K] } = {
        id: `r${taskNumber++}`,
        nodeId: base.id,
        priority: pick(random, priorities),
        request,
      };
      if (chance(random, 0.6)) task.namespace = pick(random, namespaces);
      if (chance(random, 0.6)) task.job = `j${random.int(1, 7)}`;
      if (features && chance(random, 0.15) && !ports.includes(8080)) {
        task.ports = { http: 8080 };
        ports.push(8080);
      }
      if (chance(random, 0.1)) task.preemptible = false;
      if (chance(random, 0.1)) task.terminating = true;
      running.push(task);
    }
    const node: { -readonly [K in keyof AllocatorNode]: AllocatorNode[K] } = {
      ...base,
      free: resources(free),
    };
    if (ports.length > 0) node.portsInUse = ports;
    nodes.push(node);
  }
  const nodeIds = nodes.map((n) => n.id);
  const pending: AllocatorTask[] = [];
  const pendingCount = random.int(0, options.pendingMax + 1);
  for (let i = 0; i < pendingCount; i++)
    pending.push(
      randomPending(random, `p${String(i).padStart(3, '0')}`, random.int(0, 50), nodeIds, features),
    );
  const policies: NamespacePolicy[] = [];
  if (chance(random, 0.5)) policies.push({ name: 'ns-a', weight: pick(random, [1, 2, 3]) });
  if (features && chance(random, 0.3))
    policies.push({ name: 'ns-b', quota: { cpuMillis: pick(random, [2000, 6000]) } });
  const input: { -readonly [K in keyof AllocatorInput]: AllocatorInput[K] } = {
    nodes,
    pending,
    running,
    namespaces: policies,
    placementsMax: chance(random, 0.15) ? random.int(1, 6) : 1000,
  };
  if (features && chance(random, 0.5)) input.jobs = [{ id: 'j1', runningMax: random.int(0, 4) }];
  if (chance(random, 0.2)) input.preemptionPriorityGap = pick(random, [0, 20, Infinity]);
  if (chance(random, 0.1)) input.reservationsMax = random.int(0, 3);
  return input;
}

export function resources(a: Amounts): Resources {
  const r: { cpuMillis: number; memoryBytes: number; diskBytes?: number; devices?: Record<string, number> } =
    {
      cpuMillis: a.cpu,
      memoryBytes: a.memory,
    };
  if (a.disk !== 0) r.diskBytes = a.disk;
  const devices = Object.fromEntries(Object.entries(a.devices).filter(([, count]) => count !== 0));
  if (Object.keys(devices).length > 0) r.devices = devices;
  return r;
}

// ---- what every plan must satisfy ----------------------------------------------------------------------

export function portsOf(task: { readonly ports?: Readonly<Record<string, number>> }): number[] {
  return Object.values(task.ports ?? {});
}

/**
 * Checks the invariants of a plan against its input; returns the first violation, or null. Placements
 * land in the free room on every resource (preemptors in the room their victims leave), on eligible
 * nodes with their ports free and distinct jobs apart; victims are preemptible, running, lower by the gap;
 * each pending task is accounted for once; gangs place whole; caps and quotas hold; no waiting task was
 * passed over for a lower-priority one that took room it could have used.
 */
export function violation(input: AllocatorInput, plan: Plan): string | null {
  const nodes = new Map(input.nodes.map((n) => [n.id, n]));
  const pending = new Map(input.pending.map((t) => [t.id, t]));
  const running = new Map((input.running ?? []).map((t) => [t.id, t]));
  const gap = input.preemptionPriorityGap ?? preemptionPriorityGapDefault;

  // Every pending task exactly once: placed, or waiting (preemptors wait too).
  const seen = new Set<string>();
  for (const id of [...plan.placements.map((p) => p.taskId), ...plan.waiting.map((w) => w.taskId)]) {
    if (!pending.has(id)) return `${id} is in the plan but not pending`;
    if (seen.has(id)) return `${id} appears twice`;
    seen.add(id);
  }
  if (seen.size !== pending.size)
    return `${pending.size - seen.size} pending tasks are missing from the plan`;
  // A group larger than placementsMax may still go whole, as the first decision of a plan.
  const groupSizes = new Map<string, number>();
  for (const task of input.pending)
    if (task.group !== undefined) groupSizes.set(task.group, (groupSizes.get(task.group) ?? 0) + 1);
  if (plan.placements.length > Math.max(input.placementsMax, ...groupSizes.values()))
    return 'more placements than placementsMax';

  // Victims: running, preemptible, not terminating, lower by the gap, each once.
  const victims = new Map<string, string>();
  const preemptorNode = new Map<string, string>();
  for (const p of plan.preemptions) {
    const victim = running.get(p.taskId);
    const forTask = pending.get(p.forTaskId);
    if (!victim || !forTask) return `preemption ${p.taskId} for ${p.forTaskId} names unknown tasks`;
    if (victims.has(p.taskId)) return `${p.taskId} is preempted twice`;
    victims.set(p.taskId, p.forTaskId);
    if (victim.nodeId !== p.nodeId) return `victim ${p.taskId} is not on ${p.nodeId}`;
    if (victim.preemptible === false || victim.terminating === true)
      return `${p.taskId} may not be preempted`;
    if (victim.priority > forTask.priority - gap)
      return `${p.taskId} (priority ${victim.priority}) preempted for ${forTask.id} (priority ${forTask.priority}, gap ${gap})`;
    const other = preemptorNode.get(p.forTaskId);
    if (other !== undefined && other !== p.nodeId) return `${p.forTaskId} preempts on two nodes`;
    preemptorNode.set(p.forTaskId, p.nodeId);
  }
  for (const [taskId] of preemptorNode) {
    const waiting = plan.waiting.find((w) => w.taskId === taskId);
    if (!waiting?.reason.startsWith('preempting')) return `${taskId} preempts but does not wait for it`;
  }

  // Room, eligibility, ports and distinct jobs per node.
  const placedOn = new Map<string, AllocatorTask[]>();
  for (const p of plan.placements) {
    const task = pending.get(p.taskId);
    const node = nodes.get(p.nodeId);
    if (!task || !node) return `placement ${p.taskId} → ${p.nodeId} names unknown things`;
    if (!eligible(node, task)) return `${task.id} placed on ineligible ${node.id}`;
    placedOn.set(node.id, [...(placedOn.get(node.id) ?? []), task]);
  }
  for (const [taskId, nodeId] of preemptorNode) {
    const task = pending.get(taskId);
    const node = nodes.get(nodeId);
    if (!task || !node) return `preemptor ${taskId} unknown`;
    if (!eligible(node, task)) return `${taskId} preempts on ineligible ${nodeId}`;
  }
  for (const node of input.nodes) {
    const placed = placedOn.get(node.id) ?? [];
    const preemptors = [...preemptorNode].filter(([, n]) => n === node.id).map(([t]) => pending.get(t));
    let used = zero();
    for (const task of placed) used = add(used, amounts(task.request));
    if (!within(used, amounts(node.free))) return `placements overcommit ${node.id}`;
    let freed = zero();
    for (const [victimId] of victims) {
      const victim = running.get(victimId);
      if (victim?.nodeId === node.id) freed = add(freed, amounts(victim.request));
    }
    for (const task of preemptors) if (task) used = add(used, amounts(task.request));
    if (!within(used, add(amounts(node.free), freed)))
      return `placements and preemptors overcommit ${node.id}`;
    // Ports: in use minus the victims', plus each placed task's, never twice.
    const ports = [...(node.portsInUse ?? [])];
    for (const [victimId] of victims) {
      const victim = running.get(victimId);
      if (victim?.nodeId !== node.id) continue;
      for (const port of portsOf(victim)) ports.splice(ports.indexOf(port), 1);
    }
    for (const task of [...placed, ...preemptors]) {
      for (const port of portsOf(task ?? {})) {
        if (ports.includes(port)) return `port ${port} taken twice on ${node.id}`;
        ports.push(port);
      }
    }
    // Distinct: no two tasks of a distinct job on one node, counting those already running.
    for (const task of [...placed, ...preemptors]) {
      if (!task?.distinctNodes || task.job === undefined) continue;
      const sameJob =
        [...placed, ...preemptors].filter((t) => t?.job === task.job).length +
        (input.running ?? []).filter((r) => r.nodeId === node.id && r.job === task.job && !victims.has(r.id))
          .length;
      if (sameJob > 1) return `job ${task.job} twice on ${node.id} despite distinctNodes`;
    }
  }

  // Gangs place whole or not at all.
  const groups = new Map<string, AllocatorTask[]>();
  for (const task of input.pending)
    if (task.group !== undefined) groups.set(task.group, [...(groups.get(task.group) ?? []), task]);
  const placedIds = new Set(plan.placements.map((p) => p.taskId));
  for (const [group, members] of groups) {
    const placedCount = members.filter((t) => placedIds.has(t.id)).length;
    if (placedCount !== 0 && placedCount !== members.length)
      return `group ${group} placed ${placedCount} of ${members.length}`;
  }

  // Job caps: never raised past the cap by this plan.
  for (const job of input.jobs ?? []) {
    const before = (input.running ?? []).filter((r) => r.job === job.id).length;
    const added = [...placedIds, ...preemptorNode.keys()].filter(
      (id) => pending.get(id)?.job === job.id,
    ).length;
    const removed = [...victims.keys()].filter((id) => running.get(id)?.job === job.id).length;
    if (added > 0 && before - removed + added > job.runningMax) return `job ${job.id} exceeds its cap`;
  }

  // Quotas: never raised past the quota by this plan.
  for (const policy of input.namespaces ?? []) {
    const quota = policy.quota?.cpuMillis;
    if (quota === undefined) continue;
    const inNamespace = (ns: string | undefined): boolean => (ns ?? 'default') === policy.name;
    let used = 0;
    for (const r of input.running ?? [])
      if (inNamespace(r.namespace) && !victims.has(r.id)) used += r.request.cpuMillis;
    let added = 0;
    for (const id of [...placedIds, ...preemptorNode.keys()]) {
      const task = pending.get(id);
      if (task && inNamespace(task.namespace)) added += task.request.cpuMillis;
    }
    if (added > 0 && used + added > quota) return `namespace ${policy.name} exceeds its CPU quota`;
  }

  // No skipping: a waiting task (one that waits for room) could not have used the room that
  // lower-priority placements took on any node it is eligible for. A group goes at the priority of its
  // first member (the highest).
  const effective = (task: AllocatorTask): number =>
    task.group === undefined
      ? task.priority
      : Math.max(...(groups.get(task.group) ?? [task]).map((member) => member.priority));
  for (const w of plan.waiting) {
    const task = pending.get(w.taskId);
    if (!task || !w.reason.startsWith('no node has') || !w.reason.includes(' free ')) continue;
    if (task.group !== undefined || task.nominatedNodeId !== undefined) continue;
    if (portsOf(task).length > 0 || task.distinctNodes === true) continue;
    for (const node of input.nodes) {
      if (!eligible(node, task) || !within(amounts(task.request), amounts(node.capacity))) continue;
      if (preemptorNode.has(task.id)) continue;
      let room = amounts(node.free);
      let lower = zero();
      for (const placed of placedOn.get(node.id) ?? []) {
        room = add(room, amounts(placed.request), -1);
        if (effective(placed) < task.priority) lower = add(lower, amounts(placed.request));
      }
      for (const [victimId] of victims) {
        const victim = running.get(victimId);
        if (victim?.nodeId === node.id) room = add(room, amounts(victim.request));
      }
      for (const [preemptor, n] of preemptorNode) {
        const p = pending.get(preemptor);
        if (n === node.id && p) room = add(room, amounts(p.request), -1);
      }
      if (within(amounts(task.request), add(room, lower)) && !within(amounts(task.request), room))
        return `${task.id} (priority ${task.priority}) waits while lower-priority tasks took the room it needed on ${node.id}`;
    }
  }
  return null;
}
