/**
 * The API over TLS through a real agent: an agent refuses a non-loopback API without TLS; with --tls auto
 * it serves a certificate from the cluster CA; `shoal login` pins that CA by its fingerprint (a wrong one
 * is refused) and stores what later commands need, so `shoal ps` with a fresh HOME works over TLS; plain
 * HTTP to the TLS port fails; `shoal key show` prints the key that no log line holds; a restart serves the
 * cached certificate.
 */
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TaskView } from '../../src/api/index.ts';
import { TestCluster, buildBinary, freePort, shoal, waitFor, type TestAgent } from '../helpers/cluster.ts';

describe('the API over TLS', { timeout: 60_000 }, () => {
  const cluster = new TestCluster();
  let agent: TestAgent;
  let fingerprint = '';
  let token = '';

  /** A HOME of its own (no config, no ~/.shoal socket), as a laptop's. */
  function home(): Record<string, string> {
    const dir = mkdtempSync(join(cluster.root, 'home-'));
    return { HOME: dir, XDG_CONFIG_HOME: join(dir, '.config') };
  }

  beforeAll(async () => {
    await buildBinary();
    // 127.0.0.2 is loopback, yet not the 127.0.0.1 of the defaults: the certificate must cover --api's host.
    agent = await cluster.agent({ name: 'tls1', apiHost: '127.0.0.2', extraArgs: ['--tls', 'auto'] });
    await waitFor('the agent', async () => (await agent.cli(['status'])).code === 0);
    const printed = await agent.cli(['ca', 'fingerprint']);
    expect(printed.code, printed.stderr).toBe(0);
    fingerprint = printed.stdout.trim();
    token = await waitFor('the management token', () => {
      const path = join(agent.dataDir, 'management.token');
      return Promise.resolve(existsSync(path) ? readFileSync(path, 'utf8').trim() : null);
    });
  }, 60_000);

  afterAll(async () => {
    await cluster.stop();
  }, 30_000);

  it('refuses to serve the API off loopback without TLS, in one line naming what to add', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'shoal-tls-refuse-'));
    const refused = await shoal([
      'agent',
      ...['--data-dir', dataDir, '--listen', `127.0.0.1:${await freePort()}`],
      ...['--api', `0.0.0.0:${await freePort()}`],
    ]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(
      /refusing to serve the API on 0\.0\.0\.0:\d+ without TLS: add --tls auto .* or --tls-cert FILE --tls-key FILE/,
    );
  });

  it('logs in with the right fingerprint, then runs shoal ps over TLS with nothing but the stored config', async () => {
    const env = home();
    expect(fingerprint).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    const login = await shoal(['login', agent.api, '--ca-fingerprint', fingerprint, '--token', token], env);
    expect(login.code, login.stderr).toBe(0);
    expect(login.stderr).toMatch(/logged in to https:\/\/127\.0\.0\.2:\d+ \(node tls1\)/);
    const configPath = join(env.XDG_CONFIG_HOME ?? '', 'shoal', 'config.json');
    expect(statSync(configPath).mode & 0o777).toBe(0o600);
    expect(statSync(join(env.XDG_CONFIG_HOME ?? '', 'shoal')).mode & 0o777).toBe(0o700);
    expect(JSON.parse(readFileSync(configPath, 'utf8'))).toMatchObject({
      address: `https://${agent.api}`,
      token,
    });

    const submitted = await shoal(['run', '--detach', '--', 'true'], env);
    expect(submitted.code, submitted.stderr).toBe(0);
    const ps = await shoal(['ps', '--json'], env);
    expect(ps.code, ps.stderr).toBe(0);
    expect((JSON.parse(ps.stdout) as TaskView[]).map((task) => task.id)).toContain(submitted.stdout.trim());
  });

  it('refuses a wrong fingerprint in one line, and stores nothing', async () => {
    const env = home();
    const last = fingerprint.slice(-1) === '0' ? '1' : '0';
    const wrong = `${fingerprint.slice(0, -1)}${last}`;
    const login = await shoal(['login', agent.api, '--ca-fingerprint', wrong, '--token', token], env);
    expect(login.code).toBe(1);
    expect(login.stderr.trim().split('\n')).toHaveLength(1);
    expect(login.stderr).toMatch(/does not have the fingerprint given; not logged in/);
    expect(existsSync(join(env.XDG_CONFIG_HOME ?? '', 'shoal', 'config.json'))).toBe(false);
  });

  it('fails plain HTTP to the TLS port, and an https client that does not trust the cluster CA', async () => {
    await expect(fetch(`http://${agent.api}/v1/health`)).rejects.toThrow();
    const plain = await shoal(['ps', '--addr', `http://${agent.api}`, '--token', token], home());
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/use https:\/\/HOST:PORT, --ca FILE or shoal login/);
    const untrusted = await shoal(['ps', '--addr', `https://${agent.api}`, '--token', token], home());
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toMatch(/its TLS certificate is not one this client trusts/);
    // --ca FILE instead of a login.
    const caFile = join(cluster.root, 'ca.pem');
    const cert = await agent.cli(['ca', 'cert']);
    writeFileSync(caFile, cert.stdout);
    const withCa = await shoal(['status', '--addr', agent.api, '--ca', caFile, '--token', token], home());
    expect(withCa.code, withCa.stderr).toBe(0);
  });

  it('prints the cluster key to an admin, and no log line holds it', async () => {
    const shown = await agent.cli(['key', 'show']);
    expect(shown.code, shown.stderr).toBe(0);
    const key = shown.stdout.trim();
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    const denied = await shoal(['key', 'show', '--addr', agent.api, '--ca', join(cluster.root, 'ca.pem')], {
      ...home(),
      SHOAL_TOKEN: 'shoal_wrong',
    });
    expect(denied.code).toBe(1);
    // The node that made the cluster prints the join command with the key once; nothing else does.
    const lines = agent.log().split('\n');
    expect(lines.filter((line) => line.includes(key))).toEqual([
      expect.stringMatching(/^ {2}shoal agent --join \S+ --key [0-9a-f]{64}$/),
    ]);
  });

  it('serves the cached certificate after a restart, without asking the cluster for another', async () => {
    const certificate = readFileSync(join(agent.dataDir, 'api-tls.crt'), 'utf8');
    agent.kill('SIGTERM');
    await agent.exited(20_000);
    agent.start();
    await waitFor('the agent to answer again', async () => (await agent.cli(['status'])).code === 0);
    expect(readFileSync(join(agent.dataDir, 'api-tls.crt'), 'utf8')).toBe(certificate);
    const env = home();
    const login = await shoal(['login', agent.api, '--ca-fingerprint', fingerprint], env);
    expect(login.code, login.stderr).toBe(0);
  });
});
