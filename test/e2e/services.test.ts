/**
 * Services through three real agents, each on a loopback address of its own (127.0.0.11–13) with a
 * dynamic port range of its own (they share this machine's ports): a 6-instance HTTP service (busybox
 * httpd as exec tasks) answers on every published address; DNS (dig against an agent) returns exactly the
 * healthy instances; an instance whose health endpoint starts failing leaves DNS and is restarted; a
 * rolling update to a version whose check never passes stops after maxParallel and reverts, and a good one
 * completes, never with fewer than count − maxParallel healthy (sampled every 100 ms); SIGKILL of the leader
 * mid-deployment: the new leader finishes it. 1,000 port-holding tasks churn through without a collision.
 * With SHOAL_TEST_DOCKER_BRIDGE_SOCKET (an engine with a bridge) and SHOAL_TEST_DOCKER_IMAGE: docker tasks
 * on the bridge, placed only where the engine has one, answer on their published ports.
 */
import { execFile } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Answer } from '../../src/api/index.ts';
import { TestCluster, buildBinary, freePort, waitFor, type TestAgent } from '../helpers/cluster.ts';

type Service = Answer<'service'>;
type Deployment = Answer<'deployment'>;

const count = 6;
const maxParallel = 2;
const digPath = '/usr/bin/dig';
const bridgeSocket = process.env['SHOAL_TEST_DOCKER_BRIDGE_SOCKET'];
const dockerImage = process.env['SHOAL_TEST_DOCKER_IMAGE'];

/** The web job: busybox httpd on a dynamic port; /health exists only when HEALTHY is yes. */
function webJob(version: string, healthy: boolean, minHealthyTimeMs = 1000): string {
  return [
    'name: web',
    'type: service',
    `count: ${count}`,
    'update:',
    `  maxParallel: ${maxParallel}`,
    `  minHealthyTimeMs: ${minHealthyTimeMs}`,
    '  healthyDeadlineMs: 30000',
    'task:',
    '  driver: exec',
    '  command:',
    '    - sh',
    '    - -c',
    `    - 'mkdir -p www && echo "version $VERSION $SHOAL_TASK_ID" > www/index.html && rm -f www/health && if [ "$HEALTHY" = yes ]; then echo ok > www/health; fi; exec busybox httpd -f -p "$SHOAL_PORT_HTTP" -h www'`,
    `  env: {VERSION: '${version}', HEALTHY: '${healthy ? 'yes' : 'no'}'}`,
    '  cpuMillis: 100',
    '  memoryMiB: 16',
    '  ports: {http: {}}',
    '  checks:',
    '    - {type: http, port: http, path: /health, intervalMs: 500, timeoutMs: 400, failuresBeforeUnhealthy: 2, restartAfterFailures: 6}',
    '  restart: {policy: always, maxRestarts: null, delayMs: 200}',
    '',
  ].join('\n');
}

/** GET over the agent's Unix socket (no token there): cheap enough to sample every 100 ms. */
function apiGet<T>(agent: TestAgent, path: string): Promise<T> {
  return new Promise((done, fail) => {
    const req = request({ socketPath: join(agent.dataDir, 'api.sock'), path, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        if (res.statusCode !== 200) fail(new Error(`GET ${path}: ${res.statusCode} ${body}`));
        else done(JSON.parse(body) as T);
      });
    });
    req.on('error', fail);
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.end();
  });
}

/** What an instance serves at its published address. */
function httpGet(address: string, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((done, fail) => {
    const [host = '', port = ''] = address.split(':');
    const req = request({ host, port: Number(port), path, timeout: 3000, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => done({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', fail);
    req.on('timeout', () => req.destroy(new Error(`GET http://${address}${path} timed out`)));
    req.end();
  });
}

function dig(port: number, args: string[]): Promise<string[]> {
  return new Promise((done, fail) => {
    execFile(
      digPath,
      ['@127.0.0.1', '-p', String(port), '+short', '+tries=2', '+time=2', ...args],
      (error, stdout) => {
        if (error) fail(new Error(`dig ${args.join(' ')}: ${error.message}`));
        else done(stdout.split('\n').filter((line) => line.trim() !== ''));
      },
    );
  });
}

describe('services on three agents', { timeout: 600_000 }, () => {
  const cluster = new TestCluster();
  const agents: TestAgent[] = [];
  let dnsPort = 0;
  const file = (name: string, text: string): string => {
    const path = join(cluster.root, name);
    writeFileSync(path, text);
    return path;
  };

  afterAll(async () => {
    await cluster.stop();
  }, 120_000);

  /** An agent still alive to ask. */
  const alive = (): TestAgent => {
    const agent = agents.find(
      (candidate) => candidate.process?.exitCode === null && candidate.process.signalCode === null,
    );
    if (!agent) throw new Error('no agent alive');
    return agent;
  };
  const service = (): Promise<Service> => apiGet<Service>(alive(), '/v1/services/web');
  const newestDeployment = async (): Promise<Deployment | undefined> =>
    (await apiGet<Deployment[]>(alive(), '/v1/jobs/web/deployments')).at(-1);

  /** Applies a version of the web job and samples the healthy instances every 100 ms until its deployment ends. */
  async function rollOut(text: string, until: (deployments: Deployment[]) => boolean): Promise<number> {
    // Deployments are kept five per job: the new ones are those with ids not seen before.
    const before = new Set(
      (await apiGet<Deployment[]>(alive(), '/v1/jobs/web/deployments')).map((deployment) => deployment.id),
    );
    const applied = await alive().cli(['job', 'apply', file('web.yaml', text)]);
    expect(applied.code, applied.stderr).toBe(0);
    let fewest = Infinity;
    let seen: Deployment[] = [];
    await waitFor(
      'the deployment to end',
      async () => {
        const healthy = (await service()).instances.length;
        fewest = Math.min(fewest, healthy);
        seen = (await apiGet<Deployment[]>(alive(), '/v1/jobs/web/deployments')).filter(
          (deployment) => !before.has(deployment.id),
        );
        if (until(seen)) return true;
        await new Promise((resolve) => setTimeout(resolve, 100));
        return false;
      },
      180_000,
    ).catch((error: unknown) => {
      const state = seen.map(
        (deployment) =>
          `${deployment.id} v${deployment.jobVersion} ${deployment.status}: ${deployment.statusReason}`,
      );
      throw new Error(`${String(error)}; deployments: ${state.join(' | ') || 'none'}`);
    });
    return fewest;
  }

  it('starts three agents, each on its own address and port range, one answering DNS', async () => {
    await buildBinary();
    dnsPort = await freePort();
    const flags = (i: number): string[] => [
      '--port-range',
      `2${i}000-2${i}999`,
      '--dns',
      i === 1 ? `127.0.0.1:${dnsPort}` : 'off',
    ];
    const first = await cluster.agent({
      name: 's1',
      host: '127.0.0.11',
      cpu: 4,
      extraArgs: flags(1),
      ...(bridgeSocket === undefined ? {} : { dockerSocket: bridgeSocket }),
    });
    const key = await waitFor('the cluster key', () =>
      Promise.resolve(/--key ([0-9a-f]{64})/.exec(first.log())?.[1] ?? null),
    );
    agents.push(first);
    for (const i of [2, 3])
      agents.push(
        await cluster.agent({
          name: `s${i}`,
          host: `127.0.0.1${i}`,
          cpu: 4,
          join: first.address,
          key,
          extraArgs: flags(i),
        }),
      );
    await waitFor('three members alive', async () => {
      const members = await apiGet<{ state: string }[]>(first, '/v1/members').catch(() => []);
      return members.filter((member) => member.state === 'alive').length === 3;
    });
  });

  it('serves a 6-instance HTTP service on every published address, found by the API and by DNS', async () => {
    const applied = await agents[0]?.cli(['job', 'apply', file('web.yaml', webJob('1', true))]);
    expect(applied?.code, applied?.stderr).toBe(0);
    const web = await waitFor(
      'six healthy instances',
      async () => {
        const found = await service();
        return found.instances.length === count ? found : null;
      },
      120_000,
    );
    // Its first deployment judges them healthy a second later, and makes version 1 the one to revert to.
    await waitFor(
      'the first deployment to succeed',
      async () => (await newestDeployment())?.status === 'successful',
    );
    const addresses = web.instances.map((instance) => instance.ports['http'] ?? '');
    expect(new Set(addresses).size).toBe(count);
    // Spread over the agents' own addresses, each port from its agent's range.
    for (const address of addresses) {
      const [host = '', port = ''] = address.split(':');
      const agent = Number(host.slice(-1));
      expect(host).toMatch(/^127\.0\.0\.1[123]$/);
      expect(Number(port)).toBeGreaterThanOrEqual(20_000 + agent * 1000);
      expect(Number(port)).toBeLessThan(21_000 + agent * 1000);
    }
    for (const instance of web.instances) {
      const answer = await httpGet(instance.ports['http'] ?? '');
      expect(answer).toEqual({ status: 200, body: `version 1 ${instance.taskId}\n` });
    }
    const ps = await agents[0]?.cli(['ps']);
    expect(ps?.stdout).toMatch(/running,healthy\s+s\d\s+http=127\.0\.0\.1\d:2\d{4}/);
    const shown = await agents[0]?.cli(['services', 'web']);
    expect(shown?.stdout).toMatch(/6 answering of 6 running/);

    if (!existsSync(digPath)) return;
    const srv = await dig(dnsPort, ['web.service.shoal', 'SRV']);
    // "1 1 PORT TARGET": the ports must be exactly the healthy instances' ports.
    expect(srv.map((line) => line.split(' ')[2]).sort()).toEqual(
      addresses.map((address) => address.split(':')[1]).sort(),
    );
    const a = await dig(dnsPort, ['web.service.shoal', 'A']);
    expect(a.sort()).toEqual([...new Set(addresses.map((address) => address.split(':')[0]))].sort());
    expect(await dig(dnsPort, ['nothing.service.shoal', 'A'])).toEqual([]);
  });

  it('takes an instance whose health endpoint fails out of DNS within interval × failures, then restarts it', async () => {
    const web = await service();
    const victim = web.instances[0];
    if (!victim) throw new Error('no instance');
    const owner = agents.find((agent) => agent.name === victim.node);
    if (!owner) throw new Error(`no agent ${victim.node}`);
    const port = victim.ports['http']?.split(':')[1] ?? '';
    rmSync(join(owner.dataDir, 'tasks', victim.taskId, 'www', 'health'));
    const removedAt = Date.now();
    await waitFor('the instance to leave discovery', async () =>
      (await service()).instances.every((instance) => instance.taskId !== victim.taskId),
    );
    const goneMs = Date.now() - removedAt;
    // 2 failures of a 500 ms check, plus a check's timeout and the commit: well under 5 s even on a loaded CI box.
    expect(goneMs).toBeLessThan(5000);
    if (existsSync(digPath))
      await waitFor('DNS to drop it', async () =>
        (await dig(dnsPort, ['web.service.shoal', 'SRV'])).every((line) => line.split(' ')[2] !== port),
      );
    const detail = await alive().json<Answer<'task'>>(['inspect', victim.taskId]);
    const history = detail.events.map((event) => event.message).join('\n');
    expect(history, history).toMatch(/unhealthy: GET \/health returned 404/);
    // Restarted after six failures (its command writes the file again): healthy and answering again.
    const back = await waitFor(
      'the instance to be restarted and healthy',
      async () => {
        const task = await apiGet<Answer<'task'>>(alive(), `/v1/tasks/${victim.taskId}`);
        const found = (await service()).instances.find((instance) => instance.taskId === victim.taskId);
        return task.attempt > 0 && found !== undefined ? task : null;
      },
      60_000,
    );
    const restarted = back.events.map((event) => event.message).join('\n');
    expect(restarted, restarted).toMatch(/failed: unhealthy: GET \/health/);
    console.log(`an instance whose /health fails left discovery after ${goneMs} ms (2 × 500 ms checks)`);
  });

  it('places docker tasks on the bridge only where the engine has one, and they answer on their ports', async (context) => {
    if (bridgeSocket === undefined || dockerImage === undefined) {
      context.skip(
        'set SHOAL_TEST_DOCKER_BRIDGE_SOCKET (an engine with a bridge) and SHOAL_TEST_DOCKER_IMAGE',
      );
      return;
    }
    const members = await apiGet<{ name: string; labels: Record<string, string> }[]>(alive(), '/v1/members');
    expect(members.find((member) => member.name === 's1')?.labels['shoal.docker.bridge']).toBe('true');
    const run = await alive().cli([
      'run',
      '--driver',
      'docker',
      '--image',
      dockerImage,
      '--name',
      'webd',
      '--replicas',
      '2',
      '--port',
      'http:80',
      '--check',
      'tcp:http',
      '--check-interval',
      '0.5',
      '--memory',
      '32',
      '--',
      'sh',
      '-c',
      'mkdir -p /www && echo "in a container on $SHOAL_PORT_HTTP" > /www/index.html && exec httpd -f -p 80 -h /www',
    ]);
    expect(run.code, run.stderr).toBe(0);
    const webd = await waitFor(
      'two docker instances healthy',
      async () => {
        const found = await apiGet<Service>(alive(), '/v1/services/webd');
        return found.instances.length === 2 ? found : null;
      },
      120_000,
    );
    for (const instance of webd.instances) {
      expect(instance.node).toBe('s1');
      expect(await httpGet(instance.ports['http'] ?? '')).toEqual({
        status: 200,
        body: 'in a container on 80\n',
      });
    }
    for (const instance of webd.instances) await alive().cli(['kill', instance.taskId]);
    // Ended, their published ports given back, before the next test hands those ports out again.
    await waitFor('the docker instances to end', async () => {
      const tasks = await apiGet<Answer<'tasks'>>(alive(), '/v1/tasks');
      return webd.instances.every(
        (instance) => tasks.find((task) => task.id === instance.taskId)?.state === 'killed',
      );
    });
  });

  it('runs 1,000 port-holding tasks through the agents without two of them on one port', async () => {
    // Each task holds its port with a real listener for a second; a port already taken makes httpd exit at
    // once, and the task then exits 3.
    const holder =
      'busybox httpd -f -p "$SHOAL_PORT_P" & pid=$!; sleep 1; kill -0 $pid || exit 3; kill $pid; exit 0';
    // Ten jobs of 100, one after another, at most 40 of a job at once: tasks start while others end and
    // give their ports back (a spike of 1,000 at once would only measure how a 2-core machine copes).
    const ended: Answer<'tasks'> = [];
    for (let batch = 0; batch < 10; batch++) {
      const run = await alive().cli([
        'run',
        '--name',
        `churn${batch}`,
        '--replicas',
        '100',
        '--max-running',
        '40',
        '--port',
        'p',
        '--cpu',
        '0.05',
        '--memory',
        '8',
        '--',
        'sh',
        '-c',
        holder,
      ]);
      expect(run.code, run.stderr).toBe(0);
      ended.push(
        ...(await waitFor(
          `job churn${batch} to end`,
          async () => {
            const tasks = (await apiGet<Answer<'tasks'>>(alive(), '/v1/tasks')).filter(
              (task) => task.job === `churn${batch}`,
            );
            return tasks.length === 100 &&
              tasks.every((task) => ['finished', 'failed', 'killed', 'lost'].includes(task.state))
              ? tasks
              : null;
          },
          120_000,
        )),
      );
    }
    expect(ended).toHaveLength(1000);
    const failed = ended.filter((task) => task.state !== 'finished');
    // What a failed holder said (httpd's "Address already in use" names a collision) and which port it had.
    const described = await Promise.all(
      failed.map(async (task) => {
        const logs = await alive().cli(['logs', task.id]);
        return `${task.name} on ${task.node ?? '-'} (${task.ports.map((port) => port.address).join(',')}): ${task.state} ${task.reason ?? ''}; ${(logs.stdout + logs.stderr).trim().split('\n').slice(-3).join(' | ')}`;
      }),
    );
    expect(described).toEqual([]);
  });

  it('stops a rolling update whose check never passes after maxParallel instances, and reverts it', async () => {
    const fewest = await rollOut(
      webJob('2', false),
      (deployments) => deployments.length >= 2 && deployments[1]?.status === 'successful',
    );
    const deployments = await apiGet<Deployment[]>(alive(), '/v1/jobs/web/deployments');
    const [failed, revert] = deployments.slice(-2);
    expect(failed?.status).toBe('failed');
    expect(failed?.statusReason).toMatch(/unhealthy.*reverted to version 1/);
    expect(revert).toMatchObject({ status: 'successful' });
    const detail = await alive().json<Answer<'job'>>(['job', 'status', 'web']);
    const badVersion = failed?.jobVersion ?? 0;
    const bad = detail.instances.filter((instance) => instance.version === badVersion);
    expect(bad.length).toBeGreaterThan(0);
    expect(new Set(bad.map((instance) => instance.slot)).size).toBeLessThanOrEqual(maxParallel);
    expect(fewest).toBeGreaterThanOrEqual(count - maxParallel);
    for (const instance of (await service()).instances)
      expect((await httpGet(instance.ports['http'] ?? '')).body).toMatch(/^version 1 /);
    console.log(`bad update: reverted; fewest healthy seen ${fewest} of ${count}`);
  });

  it('completes a good rolling update: every instance runs the new version', async () => {
    const fewest = await rollOut(webJob('2', true), (deployments) => deployments[0]?.status === 'successful');
    const web = await service();
    expect(web.instances).toHaveLength(count);
    for (const instance of web.instances)
      expect((await httpGet(instance.ports['http'] ?? '')).body).toMatch(/^version 2 /);
    expect(fewest).toBeGreaterThanOrEqual(count - maxParallel);
    console.log(`good update: fewest healthy seen ${fewest} of ${count}`);
  });

  it('continues a deployment on the new leader after the leader is SIGKILLed mid-way', async () => {
    const applied = await alive().cli(['job', 'apply', file('web.yaml', webJob('3', true, 4000))]);
    expect(applied.code, applied.stderr).toBe(0);
    const target = (await newestDeployment())?.id ?? '';
    await waitFor(
      'the first instances of version 3 to be healthy',
      async () => {
        const deployment = await newestDeployment();
        return deployment?.id === target && (deployment.groups[0]?.healthy ?? 0) >= 1;
      },
      120_000,
    );
    const status = await apiGet<{ leader: { name: string } | null }>(alive(), '/v1/status');
    const leader = agents.find((agent) => agent.name === status.leader?.name);
    if (!leader) throw new Error('no leader');
    leader.kill('SIGKILL');
    await leader.exited(10_000);
    const done = await waitFor(
      'the deployment to complete under the new leader',
      async () => {
        const deployment = await apiGet<Deployment>(alive(), `/v1/deployments/${target}`).catch(() => null);
        return deployment?.status === 'successful' ? deployment : null;
      },
      240_000,
    );
    expect(done.status).toBe('successful');
    const web = await service();
    expect(web.instances).toHaveLength(count);
    for (const instance of web.instances) {
      expect(instance.node).not.toBe(leader.name);
      expect((await httpGet(instance.ports['http'] ?? '')).body).toMatch(/^version 3 /);
    }
  });
});
