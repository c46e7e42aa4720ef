/**
 * Frameworks (issue #17) with real agents: the CI proofs of the issue, on one cluster of three agents shared
 * by every case, in an order that keeps it usable (the leader's SIGKILL last).
 *
 * (h) malformed calls, a stale stream id, a second SUBSCRIBE with one id, a flood of calls: clear errors;
 * (g) a suppressed framework is offered nothing; (f) a declined node is not offered again within
 * refuse_seconds; (c) a framework process SIGKILLed keeps its tasks within its failover timeout, and loses
 * them after a short one; (e) offers nobody answers are rescinded at the timeout and the other framework
 * keeps launching; (d) weights 1 and 3 converge to dominant shares of 25 % / 75 %; (a) the example framework
 * runs 200 tasks on three agents, each exactly once; (b) the same through a leader's SIGKILL.
 *
 * Agents run with --isolation off: tasks append to files in a temp dir of the host, which is how "ran
 * exactly once" is counted (an isolated task sees the host read-only).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { request, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { StatusView, TaskView } from '../../src/api/index.ts';
import type { OfferJson, SchedulerEventJson } from '../../src/api/scheduler.ts';
import { SchedulerClient, type SchedulerClientEvent } from '../../src/api/scheduler-client.ts';
import { TestCluster, buildBinary, repoRoot, waitFor, type TestAgent } from '../helpers/cluster.ts';

const mebibyte = 1024 * 1024;
/** Each agent's CPU: 2 cores, so 250-millicore tasks give the DRF case 24 slots (a slot is ~4 %). */
const agentCpuMillis = 2000;
const agentCount = 3;
/** The scheduler API's offer timeout (frameworks/limits.ts offerTimeoutMsDefault): not configurable. */
const offerTimeoutMs = 30_000;

// ---- HTTP over an agent's Unix socket (no token needed there) -----------------------------------------

interface HttpAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

function socketOf(agent: TestAgent): string {
  return join(agent.dataDir, 'api.sock');
}

/** One request; `body` is sent as is when a string (malformed JSON included), else as JSON. */
function http(
  agent: TestAgent,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<HttpAnswer> {
  return new Promise((done, fail) => {
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = request(
      {
        socketPath: socketOf(agent),
        method,
        path,
        headers: { ...(payload === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
        timeout: 60_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          done({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }),
        );
        res.on('error', fail);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', fail);
    req.end(payload);
  });
}

async function json<T>(agent: TestAgent, path: string): Promise<T> {
  const answer = await http(agent, 'GET', path);
  if (answer.status !== 200) throw new Error(`GET ${path}: ${answer.status} ${answer.body}`);
  return JSON.parse(answer.body) as T;
}

/** An error answer's message, checked to be shoal's one-line error. */
function errorLine(answer: HttpAnswer): string {
  const parsed = JSON.parse(answer.body) as { error?: { code?: string; message?: string } };
  const message = parsed.error?.message;
  expect(typeof message, answer.body).toBe('string');
  expect(message, 'one line').not.toContain('\n');
  return message ?? '';
}

/** A SUBSCRIBE held open by hand: its answer's status and stream id, and the events as they come. */
interface RawStream {
  readonly status: number;
  readonly streamId: string | undefined;
  readonly events: SchedulerEventJson[];
  /** The body of an answer that is not a stream (an error). */
  readonly body: Promise<string>;
  readonly ended: Promise<void>;
  isEnded(): boolean;
  /** Resolves once the stream ends; fails after `timeoutMs`. */
  endsWithin(timeoutMs: number): Promise<void>;
  next(
    what: string,
    match: (event: SchedulerEventJson) => boolean,
    timeoutMs?: number,
  ): Promise<SchedulerEventJson>;
  close(): void;
}

function openStream(agent: TestAgent, body: unknown): Promise<RawStream> {
  return new Promise((done, fail) => {
    const req = request(
      {
        socketPath: socketOf(agent),
        method: 'POST',
        path: '/v1/scheduler',
        headers: { 'content-type': 'application/json' },
      },
      (res: IncomingMessage) => {
        const events: SchedulerEventJson[] = [];
        const raw: string[] = [];
        let rest = '';
        let notify = (): void => {};
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          raw.push(chunk);
          rest += chunk;
          const lines = rest.split('\n');
          rest = lines.pop() ?? '';
          for (const line of lines) if (line !== '') events.push(JSON.parse(line) as SchedulerEventJson);
          notify();
        });
        let isEnded = false;
        const ended = new Promise<void>((resolve) => {
          const end = (): void => {
            isEnded = true;
            resolve();
          };
          res.on('end', end);
          res.on('close', end);
          res.on('error', end);
        });
        const header = res.headers['shoal-stream-id'];
        done({
          status: res.statusCode ?? 0,
          streamId: typeof header === 'string' ? header : undefined,
          events,
          body: ended.then(() => raw.join('')),
          ended,
          isEnded: () => isEnded,
          endsWithin: (timeoutMs) =>
            Promise.race([
              ended,
              sleep(timeoutMs).then(() =>
                Promise.reject(new Error(`the stream did not end within ${timeoutMs} ms`)),
              ),
            ]),
          next: (what, match, timeoutMs = 15_000) =>
            new Promise((found, missing) => {
              const timer = setTimeout(
                () => missing(new Error(`no ${what} within ${timeoutMs} ms`)),
                timeoutMs,
              );
              const check = (): void => {
                const event = events.find(match);
                if (event === undefined) return;
                clearTimeout(timer);
                found(event);
              };
              const previous = notify;
              notify = () => {
                previous();
                check();
              };
              check();
            }),
          close: () => req.destroy(),
        });
      },
    );
    req.on('error', fail);
    req.end(JSON.stringify(body));
  });
}

/** `count` DECLINEs of offers that do not exist, all at once, spread over `via`. */
function flood(
  frameworkId: string,
  streamId: string,
  via: readonly TestAgent[],
  count: number,
): Promise<HttpAnswer[]> {
  return Promise.all(
    Array.from({ length: count }, (_, i) =>
      http(
        via[i % via.length]!,
        'POST',
        '/v1/scheduler',
        {
          type: 'DECLINE',
          framework_id: { value: frameworkId },
          decline: { offer_ids: [{ value: `bogus-${i}` }] },
        },
        { 'shoal-stream-id': streamId },
      ).catch((failure: unknown) => ({ status: 0, headers: {}, body: String(failure) })),
    ),
  );
}

/** `stream` if it is still open after a second, else a new subscription of the framework on `agent`. */
async function liveStream(agent: TestAgent, frameworkId: string, stream: RawStream): Promise<RawStream> {
  await sleep(1000);
  if (!stream.isEnded()) return stream;
  const again = await openStream(
    agent,
    subscribeBody({ name: 'twice', role: 'twice', id: { value: frameworkId } }),
  );
  expect(again.status, await (again.status === 200 ? Promise.resolve('') : again.body)).toBe(200);
  await again.next('SUBSCRIBED again', (event) => event.type === 'SUBSCRIBED');
  return again;
}

function subscribeBody(info: Record<string, unknown>): unknown {
  return { type: 'SUBSCRIBE', subscribe: { framework_info: { name: 'raw', ...info } } };
}

// ---- a minimal framework on SchedulerClient -----------------------------------------------------------

interface TaskShape {
  readonly cpuMillis: number;
  readonly memoryMiB: number;
  readonly command: readonly string[];
}

interface FrameworkInit {
  readonly agent: TestAgent;
  readonly name: string;
  readonly role: string;
  /**
   * greedy: launches as many tasks of `task` as each offer holds (declining, for 1 s, an offer too small);
   * silent: never answers an offer; manual: records offers, the test answers.
   */
  readonly behavior: 'greedy' | 'silent' | 'manual';
  readonly task?: TaskShape;
  /** Ask for offers at once (a new subscription starts suppressed). Default true. */
  readonly revive?: boolean;
}

interface Timed<T> {
  readonly atMs: number;
  readonly value: T;
}

/**
 * Frameworks a test started and has not torn down: afterEach tears them down, so that a test that fails
 * does not leave a greedy framework holding the cluster for the tests after it.
 */
const frameworksOfThisTest = new Set<TestFramework>();

/** A framework in this process, recording what it is offered and what becomes of its tasks. */
class TestFramework {
  readonly init: FrameworkInit;
  readonly client: SchedulerClient;
  readonly offers: Timed<OfferJson>[] = [];
  readonly rescinds: Timed<{ offerId: string; reason: string }>[] = [];
  readonly launches: Timed<{ taskId: string; agentId: string }>[] = [];
  readonly states = new Map<string, string>();
  /** Calls that failed, and the subscription's failure for good. */
  readonly errors: string[] = [];
  /** ERROR events: a replaced stream, or a leader that stepped down (the client subscribes again). */
  readonly streamErrors: string[] = [];
  readonly events: Timed<SchedulerClientEvent>[] = [];
  private nextTask = 0;
  private loop: Promise<void> | null = null;
  private subscribed: Promise<string>;
  private onSubscribed: (id: string) => void = () => {};

  constructor(init: FrameworkInit) {
    this.init = init;
    frameworksOfThisTest.add(this);
    this.client = new SchedulerClient({
      connection: { address: `unix:${socketOf(init.agent)}` },
      framework: { name: init.name, role: init.role, failoverTimeoutSeconds: 60 },
    });
    this.subscribed = new Promise((resolve) => (this.onSubscribed = resolve));
  }

  /** Subscribes (and revives unless told not to); resolves with the framework id. */
  async start(): Promise<string> {
    this.loop = this.run();
    const id = await this.subscribed;
    if (this.init.revive !== false) await this.client.revive();
    return id;
  }

  private async run(): Promise<void> {
    try {
      for await (const event of this.client.events()) {
        this.events.push({ atMs: Date.now(), value: event });
        switch (event.type) {
          case 'SUBSCRIBED':
            this.onSubscribed(event.subscribed.framework_id.value);
            break;
          case 'OFFERS':
            for (const offer of event.offers.offers) this.offers.push({ atMs: Date.now(), value: offer });
            if (this.init.behavior === 'greedy') this.launchOn(event.offers.offers);
            break;
          case 'RESCIND':
            this.rescinds.push({
              atMs: Date.now(),
              value: { offerId: event.rescind.offer_id.value, reason: event.rescind.reason },
            });
            break;
          case 'UPDATE': {
            const status = event.update.status;
            this.states.set(status.task_id.value, status.state);
            this.client.acknowledge(status).catch((error: unknown) => this.fail(error));
            break;
          }
          case 'ERROR':
            this.streamErrors.push(event.error.message);
            break;
          case 'DISCONNECTED':
          case 'RESUBSCRIBED':
          case 'FAILURE':
          case 'HEARTBEAT':
            break;
        }
      }
    } catch (error) {
      this.fail(error);
    }
  }

  private fail(error: unknown): void {
    this.errors.push(error instanceof Error ? error.message : String(error));
  }

  private launchOn(offers: readonly OfferJson[]): void {
    const shape = this.init.task;
    if (shape === undefined) throw new Error('a greedy framework needs a task shape');
    const memoryBytes = shape.memoryMiB * mebibyte;
    const tooSmall: string[] = [];
    for (const offer of offers) {
      const fit = Math.min(
        Math.floor(offer.resources.cpu_millis / shape.cpuMillis),
        Math.floor(offer.resources.memory_bytes / memoryBytes),
      );
      if (fit === 0) {
        tooSmall.push(offer.id.value);
        continue;
      }
      const tasks = Array.from({ length: fit }, () => {
        const taskId = `${this.init.name}-${this.nextTask++}`;
        return {
          taskId,
          agentId: offer.agent_id.value,
          spec: {
            name: taskId,
            driver: 'exec' as const,
            command: [...shape.command],
            cpuMillis: shape.cpuMillis,
            memoryBytes,
            priority: 50,
            env: {},
            constraints: {},
          },
        };
      });
      const atMs = Date.now();
      for (const task of tasks)
        this.launches.push({ atMs, value: { taskId: task.taskId, agentId: task.agentId } });
      this.client.accept([offer.id.value], tasks).catch((error: unknown) => this.fail(error));
    }
    if (tooSmall.length > 0)
      this.client.decline(tooSmall, { refuseSeconds: 1 }).catch((error: unknown) => this.fail(error));
  }

  /** Whether its subscription dropped (a leader change: the new leader's offer book starts empty). */
  disconnectedSince(sinceMs: number): boolean {
    return this.events.some((event) => event.atMs >= sinceMs && event.value.type === 'DISCONNECTED');
  }

  /** Offers received at or after `sinceMs`. */
  offersSince(sinceMs: number): OfferJson[] {
    return this.offers.filter((offer) => offer.atMs >= sinceMs).map((offer) => offer.value);
  }

  /** Waits for `probe` to hold, polling every 50 ms. */
  async until<T>(what: string, probe: () => T | null | undefined | false, timeoutMs = 20_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = probe();
      if (value !== null && value !== undefined && value !== false) return value;
      if (Date.now() > deadline)
        throw new Error(
          `${this.init.name}: no ${what} within ${timeoutMs} ms (errors: ${this.errors.join('; ')})`,
        );
      await sleep(50);
    }
  }

  /** Unregisters it (its tasks are killed) and ends its loop. */
  async teardown(): Promise<void> {
    frameworksOfThisTest.delete(this);
    await this.client.teardown().catch(() => this.client.close());
    await this.loop;
  }
}

// ---- processes and the cluster's view -----------------------------------------------------------------

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A child process whose output is kept; `lines` are its stdout's. */
interface Child {
  readonly process: ChildProcess;
  readonly lines: string[];
  output(): string;
  exited: Promise<number | null>;
}

function startChild(args: readonly string[]): Child {
  const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const all: string[] = [];
  let rest = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    all.push(chunk);
    rest += chunk;
    const split = rest.split('\n');
    rest = split.pop() ?? '';
    lines.push(...split);
  });
  child.stderr.on('data', (chunk: string) => all.push(chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { process: child, lines, output: () => all.join(''), exited };
}

/**
 * examples/frameworks/batch.ts with COUNT copies of a command that appends its attempt to DIR/copy-N (then
 * sleeps SLEEP seconds): a copy that ran twice has two lines.
 */
function runBatch(agent: TestAgent, count: number, dir: string, sleepSeconds: number): Child {
  const script = `echo "$BATCH_ATTEMPT" >> ${dir}/copy-$BATCH_COPY${sleepSeconds > 0 ? `; sleep ${sleepSeconds}` : ''}`;
  return startChild([
    join(repoRoot, 'examples', 'frameworks', 'batch.ts'),
    '--address',
    `unix:${socketOf(agent)}`,
    '--count',
    String(count),
    '--cpu',
    '0.1',
    '--memory',
    '16',
    '--max-failures',
    '0',
    '--',
    'sh',
    '-c',
    script,
  ]);
}

/** Every copy 0…count-1 left exactly one line. */
function expectRanOnce(dir: string, count: number): void {
  const files = readdirSync(dir).sort();
  expect(files).toHaveLength(count);
  const twice = files.filter((file) => readFileSync(join(dir, file), 'utf8').trim().split('\n').length !== 1);
  expect(twice, 'copies that ran more than once').toEqual([]);
}

async function tasksOf(agent: TestAgent, frameworkId: string): Promise<TaskView[]> {
  return (await json<TaskView[]>(agent, '/v1/tasks')).filter((task) => task.framework?.id === frameworkId);
}

const live = (task: TaskView): boolean => !['finished', 'failed', 'killed', 'lost'].includes(task.state);

// ---- the cluster ----------------------------------------------------------------------------------------

const cluster = new TestCluster();
const agents: TestAgent[] = [];
const scratch = mkdtempSync(join(tmpdir(), 'shoal-frameworks-'));
// Tasks may run as another user than this test's: they write here.
chmodSync(scratch, 0o777);

async function leaderOf(among: readonly TestAgent[]): Promise<TestAgent> {
  return waitFor(
    'a leader they agree on',
    async () => {
      const statuses = await Promise.all(among.map((agent) => json<StatusView>(agent, '/v1/status')));
      const name = statuses[0]?.leader?.name;
      if (name === undefined || !statuses.every((status) => status.leader?.name === name)) return null;
      return among.find((agent) => agent.name === name) ?? null;
    },
    60_000,
  );
}

describe('frameworks on three real agents (issue #17)', { timeout: 120_000 }, () => {
  beforeAll(async () => {
    await buildBinary();
    const options = {
      cpu: agentCpuMillis / 1000,
      memoryMiB: 2048,
      extraArgs: ['--isolation', 'off'],
    };
    const first = await cluster.agent({ name: 'w1', ...options });
    const key = await waitFor('the cluster key', () =>
      Promise.resolve(/--key ([0-9a-f]{64})/.exec(first.log())?.[1] ?? null),
    );
    agents.push(first);
    for (let i = 2; i <= agentCount; i++)
      agents.push(await cluster.agent({ name: `w${i}`, join: first.address, key, ...options }));
    await cluster.explain(
      waitFor(
        'three voters, every node up',
        async () => {
          const status = await json<StatusView>(first, '/v1/status');
          const members = await json<{ state: string }[]>(first, '/v1/members');
          return (
            status.voters.length === agentCount &&
            members.length === agentCount &&
            members.every((member) => member.state === 'alive')
          );
        },
        90_000,
      ),
    );
  }, 180_000);

  afterEach(async () => {
    await Promise.all([...frameworksOfThisTest].map((framework) => framework.teardown()));
  }, 60_000);

  afterAll(async () => {
    await cluster.stop();
    rmSync(scratch, { recursive: true, force: true });
  }, 120_000);

  it('(h) malformed calls, a stale stream id, a second SUBSCRIBE with one id, a flood of calls: clear errors, no crash', async () => {
    const leader = await leaderOf(agents);
    const follower = agents.find((agent) => agent !== leader)!;
    const decline = (frameworkId: string, offerIds: string[]): unknown => ({
      type: 'DECLINE',
      framework_id: { value: frameworkId },
      decline: { offer_ids: offerIds.map((value) => ({ value })) },
    });
    // On the leader, and on a follower (which decodes, then relays or forwards to the leader).
    for (const agent of [leader, follower]) {
      const refusals: [unknown, number, RegExp][] = [
        ['{"type":', 400, /not valid JSON/],
        [{ type: 'LAUNCH' }, 400, /not a scheduler call \(type "LAUNCH"; calls are SUBSCRIBE, ACCEPT/],
        [decline('fw-x', ['o1']), 400, /DECLINE call needs the shoal-stream-id header/],
        [subscribeBody({ name: 7 }), 400, /name/],
        [subscribeBody({ failover_timeout: -1 }), 400, /failover_timeout/],
        [subscribeBody({ id: { value: 'fw-unknown' } }), 404, /no framework fw-unknown/],
      ];
      for (const [body, status, message] of refusals) {
        const answer = await http(agent, 'POST', '/v1/scheduler', body);
        expect(answer.status, `${agent.name} ${JSON.stringify(body)}: ${answer.body}`).toBe(status);
        expect(errorLine(answer)).toMatch(message);
      }
      // A stream id no leader holds.
      const stale = await http(agent, 'POST', '/v1/scheduler', decline('fw-x', ['o1']), {
        'shoal-stream-id': 'stale0000',
      });
      expect(stale.status, `${agent.name}: ${stale.body}`).toBe(409);
      expect(errorLine(stale)).toMatch(/stream stale0000 is not open on the leader.*subscribe again/);
    }

    // Two SUBSCRIBEs with one id: the older stream gets ERROR and ends, its id goes stale.
    const older = await openStream(follower, subscribeBody({ name: 'twice', role: 'twice' }));
    expect(older.status).toBe(200);
    const subscribed = await older.next('SUBSCRIBED', (event) => event.type === 'SUBSCRIBED');
    const frameworkId = subscribed.type === 'SUBSCRIBED' ? subscribed.subscribed.framework_id.value : '';
    const newer = await openStream(
      leader,
      subscribeBody({ name: 'twice', role: 'twice', id: { value: frameworkId } }),
    );
    expect(newer.status).toBe(200);
    await newer.next('SUBSCRIBED', (event) => event.type === 'SUBSCRIBED');
    const error = await older.next('ERROR on the older stream', (event) => event.type === 'ERROR');
    expect(error.type === 'ERROR' ? error.error.message : '').toMatch(/replaced this stream/);
    await older.endsWithin(10_000);
    const onOlder = await http(follower, 'POST', '/v1/scheduler', decline(frameworkId, ['o1']), {
      'shoal-stream-id': older.streamId!,
    });
    expect(onOlder.status, onOlder.body).toBe(409);
    const newerId = { 'shoal-stream-id': newer.streamId! };
    // Malformed on a live stream: an empty offer list; another framework's id.
    const empty = await http(follower, 'POST', '/v1/scheduler', decline(frameworkId, []), newerId);
    expect(empty.status, empty.body).toBe(400);
    expect(errorLine(empty)).toMatch(/offer_ids/);
    const foreign = await http(follower, 'POST', '/v1/scheduler', decline('fw-other', ['o1']), newerId);
    expect(foreign.status, foreign.body).toBe(403);
    expect(errorLine(foreign)).toMatch(/belongs to framework/);

    // A flood: 500 DECLINEs of offers that do not exist, at once, half through the follower. Mesos ignores
    // unknown offers in a DECLINE: 202. What is not a 202 must be a one-line error a framework can act on:
    // 503 while the leader changes (the flood can starve its event loop past Raft's 200 ms election
    // timeout; seen in 2 of 4 runs) or when a follower cannot forward (see the known bug below), 409 once a
    // new leader has ended the stream. Never a dropped connection or a 500.
    const answers = await flood(frameworkId, newer.streamId!, [follower, leader], 500);
    const byStatus = new Map<number, number>();
    for (const answer of answers) byStatus.set(answer.status, (byStatus.get(answer.status) ?? 0) + 1);
    console.log(`(h) the flood's answers by status: ${JSON.stringify(Object.fromEntries(byStatus))}`);
    for (const answer of answers) {
      expect([202, 409, 503], answer.body).toContain(answer.status);
      if (answer.status !== 202) errorLine(answer);
    }
    expect(byStatus.get(202) ?? 0).toBeGreaterThan(0);

    // No crash: every agent answers, and the framework carries on (on a new subscription with its id if a
    // leader change ended the stream): REVIVE brings offers, TEARDOWN ends it.
    for (const agent of agents) expect((await http(agent, 'GET', '/v1/status')).status).toBe(200);
    const live = await liveStream(follower, frameworkId, newer);
    const liveId = { 'shoal-stream-id': live.streamId! };
    const revive = await http(
      follower,
      'POST',
      '/v1/scheduler',
      { type: 'REVIVE', framework_id: { value: frameworkId } },
      liveId,
    );
    expect(revive.status, revive.body).toBe(202);
    await live.next('OFFERS after the flood', (event) => event.type === 'OFFERS');
    const teardown = await http(
      follower,
      'POST',
      '/v1/scheduler',
      { type: 'TEARDOWN', framework_id: { value: frameworkId } },
      liveId,
    );
    expect(teardown.status, teardown.body).toBe(202);
    await live.endsWithin(10_000);
    expect((await http(leader, 'GET', `/v1/frameworks/${frameworkId}`)).status).toBe(404);
  });

  // Found by this file: a follower forwarded each call on a libp2p stream of its own with no bound, and
  // libp2p allows 64 outbound streams per protocol: past 64 in flight, valid calls failed with 503. Now a
  // follower forwards at most forwardedCallsMax at once and queues the rest.
  it('(h) 200 concurrent calls through a follower are each answered 202', async () => {
    const leader = await leaderOf(agents);
    const follower = agents.find((agent) => agent !== leader)!;
    const stream = await openStream(follower, subscribeBody({ name: 'flood', role: 'flood' }));
    const subscribed = await stream.next('SUBSCRIBED', (event) => event.type === 'SUBSCRIBED');
    const frameworkId = subscribed.type === 'SUBSCRIBED' ? subscribed.subscribed.framework_id.value : '';
    try {
      const answers = await flood(frameworkId, stream.streamId!, [follower], 200);
      expect(answers.filter((answer) => answer.status !== 202).map((answer) => answer.body)).toEqual([]);
    } finally {
      stream.close();
      await http(follower, 'DELETE', `/v1/frameworks/${frameworkId}`);
    }
  });

  it('(g) a suppressed framework is offered nothing', async () => {
    const quiet = new TestFramework({
      agent: agents[1]!,
      name: 'quiet',
      role: 'quiet',
      behavior: 'manual',
      revive: false,
    });
    await quiet.start();
    // A new subscription starts suppressed: nothing while the whole cluster is free.
    await sleep(3000);
    expect(quiet.offers).toHaveLength(0);
    // REVIVE: offers come (so the silence above was the suppression's).
    await quiet.client.revive();
    await quiet.until('offers after REVIVE', () => quiet.offers.length >= agentCount, 10_000);
    // SUPPRESS, then give the offers back: their room is free again, and not offered to it.
    await quiet.client.suppress();
    await quiet.client.decline(
      quiet.offers.map((offer) => offer.value.id.value),
      { refuseSeconds: 0 },
    );
    const since = Date.now() + 500;
    await sleep(3500);
    expect(quiet.offersSince(since)).toEqual([]);
    expect(quiet.errors).toEqual([]);
    await quiet.teardown();
  });

  it('(f) a declined node is not offered again to that framework within refuse_seconds', async () => {
    const refuseSeconds = 6;
    const picky = new TestFramework({ agent: agents[2]!, name: 'picky', role: 'picky', behavior: 'manual' });
    await picky.start();
    // A leader change (CI's load can cause one) starts a new offer book without the filter: try again then.
    for (let attempt = 1; ; attempt++) {
      const startMs = Date.now();
      const first = await picky.until('an offer', () =>
        picky.offers.find((offer) => offer.atMs >= startMs - 1000),
      );
      const nodeId = first.value.agent_id.value;
      const sentAtMs = Date.now();
      await picky.client.decline([first.value.id.value], { refuseSeconds });
      // The other offers stay unanswered (held): only the declined node's room is free to offer again.
      const again = await picky.until(
        'the declined node offered again',
        () => picky.offers.find((offer) => offer.atMs >= sentAtMs && offer.value.agent_id.value === nodeId),
        (refuseSeconds + 15) * 1000,
      );
      if (picky.disconnectedSince(startMs) && attempt < 3) continue;
      const afterMs = again.atMs - sentAtMs;
      expect(afterMs, 'not within refuse_seconds').toBeGreaterThanOrEqual(refuseSeconds * 1000);
      expect(afterMs, 'offered again once the filter lapsed').toBeLessThan((refuseSeconds + 10) * 1000);
      break;
    }
    expect(picky.errors).toEqual([]);
    await picky.teardown();
  });

  it('(c) a framework process SIGKILLed keeps its tasks within failover_timeout, and loses them after a short one', async () => {
    const via = agents[1]!;
    const start = (name: string, failoverSeconds: number, id?: string): Child =>
      startChild([
        join(repoRoot, 'test', 'helpers', 'framework-process.ts'),
        '--address',
        `unix:${socketOf(via)}`,
        '--name',
        name,
        '--role',
        name,
        '--failover',
        String(failoverSeconds),
        '--count',
        '2',
        ...(id === undefined ? [] : ['--id', id]),
      ]);
    const reported = (child: Child, key: string): unknown[] =>
      child.lines.flatMap((line) => {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        return key in parsed ? [parsed[key]] : [];
      });
    const runningTasks = async (child: Child): Promise<{ id: string; tasks: TaskView[] }> => {
      const id = await waitFor(
        'the framework to subscribe',
        () => Promise.resolve(reported(child, 'subscribed')[0] as string | undefined),
        20_000,
      );
      const tasks = await waitFor(
        'its two tasks running',
        async () => {
          const tasks = await tasksOf(via, id);
          return tasks.length === 2 && tasks.every((task) => task.state === 'running') && tasks;
        },
        30_000,
      );
      return { id, tasks };
    };

    // Long failover timeout: killed, restarted with its id, its tasks never stopped.
    const keeper = start('keeper', 60);
    const { id, tasks } = await runningTasks(keeper);
    keeper.process.kill('SIGKILL');
    await keeper.exited;
    await waitFor(
      'the cluster to see it disconnected',
      async () => !(await json<{ connected: boolean }>(via, `/v1/frameworks/${id}`)).connected,
    );
    // Longer than the short timeout below: these are kept because theirs is longer.
    await sleep(4000);
    const restarted = start('keeper', 60, id);
    await waitFor(
      'the restarted framework to subscribe',
      () => Promise.resolve(reported(restarted, 'subscribed')[0] === id),
      20_000,
    );
    await waitFor(
      'its reconciliation to report both tasks running',
      () =>
        Promise.resolve(
          ['t0', 't1'].every((taskId) =>
            reported(restarted, 'update').some((u) => {
              const update = u as { taskId: string; state: string };
              return update.taskId === taskId && update.state === 'TASK_RUNNING';
            }),
          ),
        ),
      20_000,
    );
    const after = await tasksOf(via, id);
    expect(after.map((task) => [task.id, task.state, task.attempt]).sort()).toEqual(
      tasks.map((task) => [task.id, 'running', 0]).sort(),
    );
    expect((await json<{ connected: boolean }>(via, `/v1/frameworks/${id}`)).connected).toBe(true);
    restarted.process.kill('SIGKILL');
    await restarted.exited;
    expect((await http(via, 'DELETE', `/v1/frameworks/${id}`)).status).toBe(200);

    // Short failover timeout (3 s): killed, not restarted, its tasks are killed after it.
    const brief = start('brief', 3);
    const short = await runningTasks(brief);
    brief.process.kill('SIGKILL');
    const killedAtMs = Date.now();
    await brief.exited;
    await waitFor(
      'its tasks killed',
      async () => (await tasksOf(via, short.id)).every((task) => task.state === 'killed'),
      30_000,
    );
    const afterMs = Date.now() - killedAtMs;
    console.log(`(c) tasks killed ${afterMs} ms after the framework with a 3 s failover timeout`);
    expect(afterMs).toBeGreaterThanOrEqual(3000);
    expect(afterMs).toBeLessThan(3000 + 20_000);
    expect((await http(via, 'GET', `/v1/frameworks/${short.id}`)).status).toBe(404);
  });

  it('(e) offers nobody answers are rescinded at the timeout, and the other framework is not starved', async () => {
    const busy = new TestFramework({
      agent: agents[0]!,
      name: 'busy',
      role: 'busy',
      behavior: 'greedy',
      task: { cpuMillis: 500, memoryMiB: 16, command: ['sleep', '2'] },
    });
    const mute = new TestFramework({ agent: agents[1]!, name: 'mute', role: 'mute', behavior: 'silent' });
    await busy.start();
    await busy.until('busy launching', () => busy.launches.length >= 6);
    await mute.start();
    // The first offer rescinded for its timeout (a leader change, which CI's load can cause, voids the
    // offers of the old leader's book without a RESCIND; a later offer then shows the timeout).
    const rescind = await mute.until(
      'an offer to the mute framework rescinded at its timeout',
      () => mute.rescinds.find((r) => r.value.reason === `not answered within ${offerTimeoutMs} ms`),
      offerTimeoutMs + 45_000,
    );
    const first = mute.offers.find((offer) => offer.value.id.value === rescind.value.offerId)!;
    expect(first.value.expires_at_ms - first.atMs).toBeLessThanOrEqual(offerTimeoutMs);
    expect(first.value.expires_at_ms - first.atMs).toBeGreaterThan(offerTimeoutMs - 5000);
    const heldMs = rescind.atMs - first.atMs;
    expect(heldMs, 'rescinded at the timeout, not before').toBeGreaterThanOrEqual(offerTimeoutMs - 1000);
    expect(heldMs, 'rescinded at the timeout, not long after').toBeLessThan(offerTimeoutMs + 10_000);
    // Every offer of that leader's book that expired before it went the same way (ids carry the book's
    // epoch: `<leader>.<term>-o<n>`).
    const epoch = (id: string): string => id.slice(0, id.lastIndexOf('-o'));
    const rescinded = new Set(mute.rescinds.map((r) => r.value.offerId));
    const due = mute.offers.filter(
      (offer) =>
        epoch(offer.value.id.value) === epoch(first.value.id.value) &&
        offer.value.expires_at_ms + 5000 < rescind.atMs,
    );
    expect(due.filter((offer) => !rescinded.has(offer.value.id.value))).toEqual([]);
    // Meanwhile the busy framework kept launching: in each third of the wait.
    const third = heldMs / 3;
    for (let i = 0; i < 3; i++) {
      const from = first.atMs + i * third;
      const launched = busy.launches.filter((l) => l.atMs >= from && l.atMs < from + third).length;
      expect(launched, `busy launches in third ${i + 1} of the mute framework's wait`).toBeGreaterThan(0);
    }
    expect(mute.errors).toEqual([]);
    console.log(
      `(e) held ${heldMs} ms; busy launched ${busy.launches.filter((l) => l.atMs >= first.atMs && l.atMs <= rescind.atMs).length} tasks meanwhile`,
    );
    await mute.teardown();
    await busy.teardown();
  });

  it('(d) two frameworks with weights 1 and 3 converge to dominant shares of 25 % and 75 % (±5 %)', async () => {
    for (const [namespace, weight] of [
      ['light', 1],
      ['heavy', 3],
    ] as const) {
      const set = await agents[0]!.cli(['namespace', 'set', namespace, '--weight', String(weight)]);
      expect(set.code, set.stderr).toBe(0);
    }
    const task: TaskShape = { cpuMillis: 250, memoryMiB: 16, command: ['sleep', '3'] };
    const light = new TestFramework({
      agent: agents[1]!,
      name: 'light',
      role: 'light',
      behavior: 'greedy',
      task,
    });
    const heavy = new TestFramework({
      agent: agents[2]!,
      name: 'heavy',
      role: 'heavy',
      behavior: 'greedy',
      task,
    });
    await Promise.all([light.start(), heavy.start()]);
    const totalCpuMillis = agentCpuMillis * agentCount;
    const shares = async (): Promise<{ light: number; heavy: number }> => {
      const tasks = (await json<TaskView[]>(agents[0]!, '/v1/tasks')).filter(live);
      const share = (namespace: string): number =>
        tasks.filter((t) => t.namespace === namespace).reduce((sum, t) => sum + t.cpuMillis, 0) /
        totalCpuMillis;
      return { light: share('light'), heavy: share('heavy') };
    };
    // Converge (tasks turn over every ~3 s), then measure over a window.
    await sleep(12_000);
    const samples: { light: number; heavy: number }[] = [];
    const windowEndMs = Date.now() + 20_000;
    while (Date.now() < windowEndMs) {
      samples.push(await shares());
      await sleep(500);
    }
    const mean = (key: 'light' | 'heavy'): number =>
      samples.reduce((sum, s) => sum + s[key], 0) / samples.length;
    console.log(
      `(d) ${samples.length} samples: light ${mean('light').toFixed(3)}, heavy ${mean('heavy').toFixed(3)}; launches ${light.launches.length}/${heavy.launches.length}`,
    );
    expect(mean('light') + mean('heavy'), 'the cluster was saturated').toBeGreaterThan(0.85);
    expect(Math.abs(mean('light') - 0.25)).toBeLessThanOrEqual(0.05);
    expect(Math.abs(mean('heavy') - 0.75)).toBeLessThanOrEqual(0.05);
    await Promise.all([light.teardown(), heavy.teardown()]);
  });

  it('(a) the example framework runs 200 tasks on three agents, each exactly once', async () => {
    const dir = mkdtempSync(join(scratch, 'a-'));
    chmodSync(dir, 0o777);
    const started = Date.now();
    const batch = runBatch(agents[0]!, 200, dir, 0);
    const code = await batch.exited;
    const elapsedMs = Date.now() - started;
    expect(code, batch.output()).toBe(0);
    expect(batch.output()).toMatch(/batch: 200 copies finished, 0 failed/);
    const frameworkId = /subscribed as framework (\S+)/.exec(batch.output())?.[1] ?? '';
    const tasks = await tasksOf(agents[0]!, frameworkId);
    // Launches the cluster refused (a leader change) never became tasks: every task there finished.
    expect(tasks.filter((task) => task.state !== 'finished')).toEqual([]);
    const copies = new Set(tasks.map((task) => /^copy-(\d+)-/.exec(task.framework?.taskId ?? '')?.[1]));
    expect(tasks).toHaveLength(200);
    expect(copies.size).toBe(200);
    expect(new Set(tasks.map((task) => task.node)).size).toBe(agentCount);
    expectRanOnce(dir, 200);
    console.log(`(a) 200 copies in ${elapsedMs} ms`);
  });

  it('(b) SIGKILL of the leader mid-run: the framework subscribes again and reconciles, none lost, none run twice', async () => {
    const leader = await leaderOf(agents);
    const survivors = agents.filter((agent) => agent !== leader);
    // The leader's node runs none of the copies: its SIGKILL tests the scheduler API's failover, not the
    // loss of a node's tasks (which are lost with it, and whose shims would still finish them).
    const drained = await survivors[0]!.cli(['drain', leader.name]);
    expect(drained.code, drained.stderr).toBe(0);
    const dir = mkdtempSync(join(scratch, 'b-'));
    chmodSync(dir, 0o777);
    // 60 copies of 4 s on two nodes of 20 slots: the first 40 launch at once; the leader goes once they all
    // run, so they finish during the failover (their updates come from the new leader) and the last 20
    // launch on the new leader's offers. Killed while an ACCEPT is in flight through the follower, the
    // run went wrong before a fix this file found: the follower answered 503 for an ACCEPT whose launch
    // had committed (the leader died after taking it), the client called it refused, and batch.ts launched
    // the copies again. Now the follower answers 504 (outcome unknown), which the client reports as no
    // answer, and batch.ts reconciles. The drained leader keeps this case about the API's failover.
    const count = 60;
    const batch = runBatch(survivors[0]!, count, dir, 4);
    await waitFor(
      'the first 40 copies running',
      () => Promise.resolve(readdirSync(dir).length >= 40),
      60_000,
    );
    leader.kill('SIGKILL');
    await leader.exited(10_000);
    const code = await batch.exited;
    expect(code, batch.output()).toBe(0);
    expect(batch.output()).toMatch(new RegExp(`batch: ${count} copies finished, 0 failed`));
    expect(batch.output()).toMatch(/subscribed again as/);
    const frameworkId = /subscribed as framework (\S+)/.exec(batch.output())?.[1] ?? '';
    const tasks = await tasksOf(survivors[0]!, frameworkId);
    const unfinished = tasks.filter((task) => task.state !== 'finished');
    expect(
      unfinished.map((task) => `${task.framework?.taskId} ${task.state} (${task.reason})`),
      batch.output(),
    ).toEqual([]);
    expect(new Set(tasks.map((task) => /^copy-(\d+)-/.exec(task.framework?.taskId ?? '')?.[1])).size).toBe(
      count,
    );
    expect(tasks).toHaveLength(count);
    expectRanOnce(dir, count);
  });
});
