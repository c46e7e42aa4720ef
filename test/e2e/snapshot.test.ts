/**
 * Backups through real agents: `shoal snapshot save` on a working single-node cluster, then `shoal
 * snapshot restore` into a new one. Waiting tasks come back waiting, a task that ran comes back lost and
 * runs again when its restart policy says so, a token made on the old cluster works on the new one; a
 * damaged, truncated or foreign file is refused in one line, and so is a restore into a cluster that has
 * tasks.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TaskView } from '../../src/api/index.ts';
import { TestCluster, buildBinary, shoal, waitFor, type TestAgent } from '../helpers/cluster.ts';

describe('shoal snapshot save and restore', { timeout: 90_000 }, () => {
  const cluster = new TestCluster();
  let old: TestAgent;
  let fresh: TestAgent;
  const file = join(cluster.root, 'backup.json');
  const ids: Record<'service' | 'oneShot' | 'waiting' | 'done', string> = {
    service: '',
    oneShot: '',
    waiting: '',
    done: '',
  };
  let deployToken = '';

  async function ps(agent: TestAgent): Promise<TaskView[]> {
    return agent.json<TaskView[]>(['ps']);
  }

  async function submit(agent: TestAgent, args: string[]): Promise<string> {
    const run = await agent.cli(['run', ...args]);
    expect(run.code, run.stderr).toBe(0);
    return run.stdout.trim();
  }

  beforeAll(async () => {
    await buildBinary();
    old = await cluster.agent({ name: 'old1' });
    await waitFor('the old cluster', async () => (await old.cli(['status'])).code === 0);
    ids.service = await submit(old, ['--name', 'service', '--restart', 'always', '--', 'sleep', '600']);
    ids.oneShot = await submit(old, ['--name', 'one-shot', '--reschedule', 'never', '--', 'sleep', '600']);
    ids.waiting = await submit(old, ['--name', 'waiting', '--constraint', 'zone==nowhere', '--', 'true']);
    ids.done = await submit(old, ['--name', 'done', '--', 'true']);
    const namespace = await old.cli(['namespace', 'set', 'team', '--weight', '3']);
    expect(namespace.code, namespace.stderr).toBe(0);
    const token = await old.cli(['acl', 'token', 'create', '--name', 'ci', '--role', 'deploy']);
    expect(token.code, token.stderr).toBe(0);
    deployToken = token.stdout.trim();
    await waitFor('the tasks to run and finish', async () => {
      const tasks = await ps(old);
      const state = (id: string): string | undefined => tasks.find((task) => task.id === id)?.state;
      return (
        state(ids.service) === 'running' && state(ids.oneShot) === 'running' && state(ids.done) === 'finished'
      );
    });
  }, 90_000);

  afterAll(async () => {
    await cluster.stop();
  }, 30_000);

  it('saves a checksummed file, 0600, that names its index and task count', async () => {
    const saved = await old.cli(['snapshot', 'save', file]);
    expect(saved.code, saved.stderr).toBe(0);
    expect(saved.stderr).toMatch(/^saved the state at index \d+ \(4 tasks, \d+ bytes\) to /);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const content = JSON.parse(readFileSync(file, 'utf8')) as {
      format: string;
      sha256: string;
      tasks: number;
    };
    expect(content).toMatchObject({ format: 'shoal-snapshot', tasks: 4 });
    expect(content.sha256).toMatch(/^[0-9a-f]{64}$/);
    // The old cluster goes away, its tasks with it.
    old.kill('SIGTERM');
    await old.exited(30_000);
  });

  it('refuses a damaged, a truncated and a foreign file in one line each, before touching a cluster', async () => {
    fresh = await cluster.agent({ name: 'new1' });
    await waitFor('the new cluster', async () => (await fresh.cli(['status'])).code === 0);
    const text = readFileSync(file, 'utf8');
    const damaged = join(cluster.root, 'damaged.json');
    // One character of the state changed: still JSON, still the right shape, the wrong checksum.
    writeFileSync(damaged, text.replace('one-shot', 'one-shoT'));
    const truncated = join(cluster.root, 'truncated.json');
    writeFileSync(truncated, text.slice(0, Math.floor(text.length / 2)));
    const foreign = join(cluster.root, 'foreign.json');
    writeFileSync(foreign, JSON.stringify({ header: { cluster_id: 1 }, kvs: [] }));
    for (const [path, message] of [
      [damaged, /is corrupt: its state does not match its SHA-256 checksum/],
      [truncated, /is not a shoal snapshot: it is not JSON/],
      [foreign, /is not a shoal snapshot \(it has no "format": "shoal-snapshot"\)/],
      [join(cluster.root, 'missing.json'), /cannot read .*: no such file/],
    ] as const) {
      const refused = await fresh.cli(['snapshot', 'restore', path]);
      expect(refused.code, path).not.toBe(0);
      expect(refused.stderr.trim().split('\n'), refused.stderr).toHaveLength(1);
      expect(refused.stderr).toMatch(message);
    }
    expect(await ps(fresh)).toEqual([]);
  });

  it('restores into a new cluster: waiting tasks wait, a task that ran runs again by its policy', async () => {
    const restored = await fresh.cli(['snapshot', 'restore', file]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stderr).toMatch(
      /: 4 tasks: 1 waiting, 1 ran and are queued again, 1 ran and stay lost; 1 namespaces, 2 tokens/,
    );
    const tasks = await waitFor('the service to run again', async () => {
      const all = await ps(fresh);
      return all.find((task) => task.id === ids.service)?.state === 'running' ? all : null;
    });
    const byId = new Map(tasks.map((task) => [task.id, task]));
    expect(byId.get(ids.service)).toMatchObject({ state: 'running', node: 'new1' });
    expect(byId.get(ids.oneShot)).toMatchObject({ state: 'lost' });
    expect(byId.get(ids.oneShot)?.reason).toMatch(
      /restored from a snapshot; its node .* is not in this cluster/,
    );
    expect(byId.get(ids.waiting)).toMatchObject({ state: 'pending' });
    expect(byId.get(ids.done)).toMatchObject({ state: 'finished' });
    const namespaces = await fresh.cli(['namespace', 'ls']);
    expect(namespaces.stdout).toMatch(/team\s+3/);
  });

  it("keeps the old cluster's tokens: a deploy token made there lists tasks here", async () => {
    const listed = await shoal(['ps', '--addr', fresh.api, '--token', deployToken]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(ids.service);
    // And the new cluster's own management token still works.
    const management = readFileSync(join(fresh.dataDir, 'management.token'), 'utf8').trim();
    expect((await shoal(['acl', 'token', 'list', '--addr', fresh.api, '--token', management])).code).toBe(0);
  });

  it('refuses a second restore into a cluster that has tasks, and changes nothing', async () => {
    const before = await ps(fresh);
    const refused = await fresh.cli(['snapshot', 'restore', file]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/this cluster has 4 tasks; restore into a new cluster/);
    expect((await ps(fresh)).map((task) => task.id)).toEqual(before.map((task) => task.id));
  });

  it('needs an admin: a deploy token may not save one', async () => {
    const denied = await shoal([
      'snapshot',
      'save',
      join(cluster.root, 'x.json'),
      '--addr',
      fresh.api,
      '--token',
      deployToken,
    ]);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/admin/);
  });
});
