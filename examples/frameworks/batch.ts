/**
 * A batch framework on shoal's scheduler API (issue #17): runs COUNT copies of a command as exec tasks,
 * launching pending copies on offers as they fit (several per offer, a node's offers in one ACCEPT),
 * relaunching a failed copy up to MAX-FAILURES times, and tearing down when done. It survives a leader
 * failover: SchedulerClient subscribes again and reconciles, and this program keeps its copies' state, so a
 * copy still running is never launched twice (an older attempt that turns up running is killed).
 *
 *   node examples/frameworks/batch.ts --address HOST:PORT [--address …] [--token T] [--ca FILE] --count N --cpu CORES \
 *     --memory MIB --max-failures K -- CMD ARGS…
 *
 * Exit status: 0 when every copy finished; 1 when one failed MAX-FAILURES + 1 times, or the subscription
 * failed for good; 2 for bad flags.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { OfferJson, TaskStatusJson, SchedulerEventJson } from '../../src/api/scheduler.ts';
import { SchedulerClient, SchedulerClientError } from '../../src/api/scheduler-client.ts';
import type { TaskSpec } from '../../src/cluster/index.ts';

const { values: flags, positionals: command } = parseArgs({
  allowPositionals: true,
  options: {
    // More than one: tried in turn when the one in use drops (the framework outlives a node).
    address: { type: 'string', multiple: true },
    token: { type: 'string' },
    ca: { type: 'string' },
    count: { type: 'string', default: '1' },
    cpu: { type: 'string', default: '0.1' },
    memory: { type: 'string', default: '32' },
    'max-failures': { type: 'string', default: '0' },
  },
});
const count = Number(flags.count);
const cpuMillis = Math.round(Number(flags.cpu) * 1000);
const memoryBytes = Math.round(Number(flags.memory) * 1024 * 1024);
const maxFailures = Number(flags['max-failures']);
const whole = (n: number, min: number): boolean => Number.isInteger(n) && n >= min;
if (
  flags.address === undefined ||
  flags.address.length === 0 ||
  command.length === 0 ||
  !whole(count, 1) ||
  !whole(maxFailures, 0) ||
  !(cpuMillis > 0 && memoryBytes > 0)
) {
  console.error(
    'usage: batch.ts --address HOST:PORT [--token T] [--ca FILE] --count N --cpu CORES --memory MIB --max-failures K -- CMD ARGS…',
  );
  process.exit(2);
}

/** One copy of the command; each launch of it is a new attempt, with a task id of its own. */
interface Copy {
  readonly index: number;
  attempt: number;
  phase: 'pending' | 'launching' | 'running' | 'done';
  failures: number;
  /** The current attempt's last state heard; null before any. */
  state: string | null;
}
const copies: Copy[] = Array.from({ length: count }, (_, index) => ({
  index,
  attempt: 1,
  phase: 'pending',
  failures: 0,
  state: null,
}));
const totals = { finished: 0, failed: 0, relaunched: 0, offers: 0 };
const taskIdOf = (copy: Copy): string => `copy-${copy.index}-attempt-${copy.attempt}`;
const log = (line: string): void => console.log(`${new Date().toISOString().slice(11, 23)} ${line}`);
const warn = (error: unknown): void =>
  log(`warning: ${error instanceof Error ? error.message : String(error)}`);

const [address = '', ...alternates] = flags.address ?? [];
const client = new SchedulerClient({
  alternates,
  connection: {
    address,
    ...(flags.token === undefined ? {} : { token: flags.token }),
    ...(flags.ca === undefined ? {} : { ca: readFileSync(flags.ca, 'utf8') }),
  },
  // Long enough to ride out a leader failover; short enough that tasks of a crashed batch do not linger.
  framework: { name: 'batch', failoverTimeoutSeconds: 300 },
});

function spec(copy: Copy): TaskSpec {
  const env = { BATCH_COPY: String(copy.index), BATCH_ATTEMPT: String(copy.attempt) };
  return {
    name: taskIdOf(copy),
    driver: 'exec',
    command,
    cpuMillis,
    memoryBytes,
    priority: 50,
    env,
    constraints: {},
  };
}

/** A new attempt; `failed` counts against --max-failures (a launch that never happened does not). */
function relaunch(copy: Copy, failed: boolean, why: string): void {
  if (failed && ++copy.failures > maxFailures) {
    copy.phase = 'done';
    totals.failed += 1;
    return log(
      `${taskIdOf(copy)} ${why}; that is ${copy.failures} failures of copy ${copy.index}, giving up`,
    );
  }
  log(`${taskIdOf(copy)} ${why}; relaunching`);
  Object.assign(copy, { attempt: copy.attempt + 1, phase: 'pending', state: null });
  totals.relaunched += 1;
}

async function onOffers(offers: readonly OfferJson[]): Promise<void> {
  totals.offers += offers.length;
  const pending = copies.filter((copy) => copy.phase === 'pending');
  const unused: string[] = [];
  // A node's offers together: room no single one of them holds may still take a task.
  for (const [agentId, nodeOffers] of Map.groupBy(offers, (offer) => offer.agent_id.value)) {
    let cpu = nodeOffers.reduce((sum, offer) => sum + offer.resources.cpu_millis, 0);
    let memory = nodeOffers.reduce((sum, offer) => sum + offer.resources.memory_bytes, 0);
    const launched: Copy[] = [];
    for (
      ;
      pending.length > 0 && cpu >= cpuMillis && memory >= memoryBytes;
      cpu -= cpuMillis, memory -= memoryBytes
    ) {
      launched.push(Object.assign(pending.shift() as Copy, { phase: 'launching', state: null }));
    }
    const offerIds = nodeOffers.map((offer) => offer.id.value);
    if (launched.length === 0) {
      unused.push(...offerIds);
      continue;
    }
    const tasks = launched.map((copy) => ({ taskId: taskIdOf(copy), agentId, spec: spec(copy) }));
    log(
      `launching ${tasks.map((task) => task.taskId).join(', ')} on ${nodeOffers.map((o) => o.hostname).join()}`,
    );
    await client.accept(offerIds, tasks).catch(async (error: unknown) => {
      warn(error);
      // Sent but unanswered: they may run, so ask. Otherwise they never launched: new attempts.
      if (error instanceof SchedulerClientError && error.reason === 'NO_ANSWER') {
        await client.reconcile(tasks.map((task) => task.taskId)).catch(warn);
      } else for (const copy of launched) relaunch(copy, false, 'was not launched');
    });
  }
  // Of no use now; a REVIVE (when a copy needs a relaunch) lifts the refusal early.
  if (unused.length > 0) await client.decline(unused, { refuseSeconds: 60 }).catch(warn);
}

async function onUpdate(status: TaskStatusJson): Promise<void> {
  await client.acknowledge(status).catch(warn);
  const [, index, attempt] = /^copy-(\d+)-attempt-(\d+)$/.exec(status.task_id.value) ?? [];
  const copy = copies[Number(index)];
  const state = status.state;
  const active = ['TASK_STAGING', 'TASK_STARTING', 'TASK_RUNNING', 'TASK_KILLING'].includes(state);
  if (copy === undefined) return;
  if (Number(attempt) !== copy.attempt) {
    // An older attempt, thought never launched: one copy must not run twice.
    if (active) await client.kill(status.task_id.value).catch(warn);
    return;
  }
  if (copy.phase !== 'launching' && copy.phase !== 'running') return;
  const why = `${state.slice(5).toLowerCase()}${status.message === '' ? '' : ` (${status.message})`}`;
  if (active) {
    if (state !== copy.state) log(`${taskIdOf(copy)} ${why}`);
    Object.assign(copy, { phase: 'running', state });
  } else if (state === 'TASK_FINISHED') {
    copy.phase = 'done';
    log(`${taskIdOf(copy)} finished (${++totals.finished}/${count})`);
  } else if (state !== 'TASK_UNKNOWN') {
    // DROPPED never started; LOST of an attempt never heard of: the cluster never had it.
    relaunch(copy, state !== 'TASK_DROPPED' && (state !== 'TASK_LOST' || copy.state !== null), why);
  }
}

async function onResubscribed(frameworkId: string, errors: readonly string[]): Promise<void> {
  log(`subscribed again as ${frameworkId}${errors.length > 0 ? `: ${errors.join('; ')}` : ''}`);
  // The client reconciled implicitly (every task the cluster knows); name ours too, so a launch the old
  // leader never committed comes back TASK_LOST and is relaunched.
  const live = copies.filter((copy) => copy.phase === 'launching' || copy.phase === 'running');
  if (live.length > 0) await client.reconcile(live.map(taskIdOf)).catch(warn);
}

function note(event: SchedulerEventJson): void {
  if (event.type === 'SUBSCRIBED') log(`subscribed as framework ${event.subscribed.framework_id.value}`);
  if (event.type === 'FAILURE') log(`node ${event.failure.agent_id.value} left the cluster`);
  if (event.type === 'ERROR') log(`error from the cluster: ${event.error.message}`);
}

let exitCode = 1;
process.once('SIGINT', () => void client.teardown().catch(() => client.close()));
try {
  for await (const event of client.events()) {
    if (event.type === 'OFFERS') await onOffers(event.offers.offers);
    else if (event.type === 'UPDATE') await onUpdate(event.update.status);
    else if (event.type === 'RESUBSCRIBED') await onResubscribed(event.frameworkId, event.errors);
    else if (event.type === 'DISCONNECTED')
      log(`disconnected (${event.reason}); again in ${event.retryInMs} ms`);
    else note(event);
    if (totals.finished === count || totals.failed > 0) {
      exitCode = totals.failed > 0 ? 1 : 0;
      await client.teardown().catch(warn); // kills whatever still runs
      break;
    }
    // Offers only while a copy waits for one. Not while disconnected: a call would wait for the next
    // subscription, and the client revives that one itself if this one was revived.
    const pending = copies.some((copy) => copy.phase === 'pending');
    if (client.subscribed && pending && client.suppressed) await client.revive().catch(warn);
    if (client.subscribed && !pending && !client.suppressed) await client.suppress().catch(warn);
  }
} catch (error) {
  warn(error);
}
client.close();
console.log(
  `batch: ${totals.finished} copies finished, ${totals.failed} failed, ${totals.relaunched} relaunched, ${totals.offers} offers received`,
);
process.exit(exitCode);
