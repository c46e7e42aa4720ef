/**
 * A framework as a process of its own, for tests that SIGKILL it (test/e2e/frameworks.test.ts, issue #17
 * case c). It subscribes through SchedulerClient, launches COUNT long-running exec tasks on its first offers
 * (ids `t0`, `t1`, …) unless it was given --id (a restarted scheduler: it launches nothing and only
 * reconciles), then idles until killed. It acknowledges every update and reports on stdout, one JSON object a
 * line: `{"subscribed":ID}`, `{"launched":[TASK_ID…]}`, `{"update":{"taskId","state"}}`, `{"error":MESSAGE}`.
 *
 *   node test/helpers/framework-process.ts --address unix:SOCKET --name N --role R --failover SECONDS \
 *     [--id FRAMEWORK_ID] [--count N] [--cpu-millis M]
 */
import { parseArgs } from 'node:util';
import { SchedulerClient } from '../../src/api/scheduler-client.ts';
import type { OfferJson } from '../../src/api/scheduler.ts';
import type { TaskSpec } from '../../src/cluster/index.ts';

const { values: flags } = parseArgs({
  options: {
    address: { type: 'string' },
    name: { type: 'string', default: 'proc' },
    role: { type: 'string', default: 'default' },
    failover: { type: 'string', default: '3600' },
    id: { type: 'string' },
    count: { type: 'string', default: '2' },
    'cpu-millis': { type: 'string', default: '100' },
  },
});
if (flags.address === undefined) throw new Error('--address is required');
const count = flags.id === undefined ? Number(flags.count) : 0;
const cpuMillis = Number(flags['cpu-millis']);
const report = (line: object): void => void process.stdout.write(`${JSON.stringify(line)}\n`);

const client = new SchedulerClient({
  connection: { address: flags.address },
  framework: {
    name: flags.name,
    role: flags.role,
    failoverTimeoutSeconds: Number(flags.failover),
    ...(flags.id === undefined ? {} : { id: flags.id }),
  },
});

const spec = (taskId: string): TaskSpec => ({
  name: `${flags.name}-${taskId}`,
  driver: 'exec',
  command: ['sleep', '600'],
  cpuMillis,
  memoryBytes: 16 * 1024 * 1024,
  priority: 50,
  env: {},
  constraints: {},
});

let next = 0;
async function onOffers(offers: readonly OfferJson[]): Promise<void> {
  const unused: string[] = [];
  for (const offer of offers) {
    let room = offer.resources.cpu_millis;
    const tasks = [];
    for (; next < count && room >= cpuMillis; next++, room -= cpuMillis) {
      const taskId = `t${next}`;
      tasks.push({ taskId, agentId: offer.agent_id.value, spec: spec(taskId) });
    }
    if (tasks.length === 0) {
      unused.push(offer.id.value);
      continue;
    }
    await client.accept([offer.id.value], tasks);
    report({ launched: tasks.map((task) => task.taskId) });
  }
  if (unused.length > 0) await client.decline(unused, { refuseSeconds: 60 });
  if (next >= count && !client.suppressed) await client.suppress();
}

try {
  for await (const event of client.events()) {
    try {
      if (event.type === 'SUBSCRIBED') {
        report({ subscribed: event.subscribed.framework_id.value });
        if (count > 0) await client.revive();
        else await client.reconcile();
      } else if (event.type === 'OFFERS') await onOffers(event.offers.offers);
      else if (event.type === 'UPDATE') {
        const status = event.update.status;
        report({ update: { taskId: status.task_id.value, state: status.state } });
        await client.acknowledge(status);
      }
    } catch (error) {
      report({ error: error instanceof Error ? error.message : String(error) });
    }
  }
} catch (error) {
  report({ error: error instanceof Error ? error.message : String(error) });
  process.exit(1);
}
