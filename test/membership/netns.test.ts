/**
 * Membership between real processes, each in its own network namespace on one bridge: the built
 * binary, real libp2p over TCP. One node's link is cut (packets vanish, no resets): the others declare
 * it dead. The link comes back: it refutes and is alive everywhere again, and it sees everyone alive.
 * Needs root; skipped with a message otherwise. Removes its namespaces even when it fails, and those a
 * crashed earlier run left behind.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binaryPath, buildBinary } from '../helpers/cluster.ts';
import { Agent, waitUntil } from '../../scripts/lib/membership-agents.ts';
import {
  NetnsNetwork,
  cleanupStale,
  netnsUnavailableReason,
  type NetnsHost,
} from '../../scripts/lib/netns.ts';

const unavailable = netnsUnavailableReason();
if (unavailable !== null) console.warn(`skipping the network-namespace membership test: ${unavailable}`);

/** A prebuilt binary to test instead of building dist/shoal (e.g. one built from a clean checkout). */
const prebuilt = process.env['SHOAL_MEMBERSHIP_BINARY'];
const hostCount = 4;
const clusterPort = 7946;
const apiPort = 7947;

describe.skipIf(unavailable !== null)('membership across network namespaces', { timeout: 120_000 }, () => {
  let net: NetnsNetwork | null = null;
  let root = '';
  const agents: Agent[] = [];
  const hostOf = new Map<Agent, NetnsHost>();

  async function everyoneSees(observers: Agent[], subject: string, state: string): Promise<boolean> {
    const views = await Promise.all(observers.map((agent) => agent.stateOf(subject)));
    return views.every((view) => view === state);
  }

  beforeAll(async () => {
    if (prebuilt === undefined) await buildBinary();
    cleanupStale();
    net = new NetnsNetwork(hostCount);
    net.setUp();
    root = mkdtempSync(join(tmpdir(), 'shoal-netns-'));
    const key = randomBytes(32).toString('hex');
    const seedAddress = `${net.hosts[0]?.address}:${clusterPort}`;
    for (const host of net.hosts) {
      const agent = new Agent({
        name: `n${host.index}`,
        dir: join(root, `n${host.index}`),
        listen: `${host.address}:${clusterPort}`,
        api: `${host.address}:${apiPort}`,
        key,
        ...(host.index === 1 ? {} : { join: seedAddress }),
        command: [prebuilt ?? binaryPath],
        network: { net, host },
      });
      agents.push(agent);
      hostOf.set(agent, host);
    }
    const [seed, ...rest] = agents;
    seed?.start();
    await waitUntil('the seed to answer', async () => (await seed?.members())?.length === 1, 30_000);
    for (const agent of rest) agent.start();
    for (const agent of agents) {
      await waitUntil(
        `${agent.name} to see ${hostCount} alive`,
        async () => (await agent.members()).filter((m) => m.state === 'alive').length === hostCount,
        30_000,
      );
    }
  }, 90_000);

  afterAll(async () => {
    for (const agent of agents) await agent.kill().catch(() => undefined);
    net?.tearDown();
    if (root !== '' && process.env['SHOAL_TEST_KEEP'] === undefined)
      rmSync(root, { recursive: true, force: true });
  }, 30_000);

  it('declares a node cut off dead, and alive again once its link is back', async () => {
    const isolated = agents[hostCount - 1]!;
    const others = agents.slice(0, -1);
    const host = hostOf.get(isolated)!;
    net!.cut(host);
    const cutAtMs = Date.now();
    await waitUntil(
      'the others to see the cut node dead',
      () => everyoneSees(others, isolated.name, 'dead'),
      30_000,
    );
    const detectedMs = Date.now() - cutAtMs;
    // Suspected first, then dead; never "left".
    const seen = others.flatMap((agent) => agent.transitions()).filter((t) => t.subject === isolated.name);
    expect(seen.some((t) => t.state === 'suspect' && t.atMs >= cutAtMs)).toBe(true);
    expect(seen.some((t) => t.state === 'left')).toBe(false);
    // With no confirmations from the far side, a suspicion lasts at most its maximum (9 s here).
    expect(detectedMs).toBeLessThan(20_000);

    net!.restore(host);
    const restoredAtMs = Date.now();
    await waitUntil(
      'the others to see it alive again',
      () => everyoneSees(others, isolated.name, 'alive'),
      30_000,
    );
    await waitUntil(
      'it to see everyone alive',
      async () => (await isolated.members()).filter((m) => m.state === 'alive').length === hostCount,
      30_000,
    );
    // It came back by refuting (a newer revision), not by restarting: the boot count is unchanged.
    const view = (await others[0]!.members()).find((m) => m.name === isolated.name);
    expect(view?.incarnation).toBe(1);
    console.info(
      `cut → all others see dead: ${(detectedMs / 1000).toFixed(1)} s; ` +
        `restored → alive everywhere: ${((Date.now() - restoredAtMs) / 1000).toFixed(1)} s`,
    );
    // Nobody else was ever declared dead.
    const wrong = agents
      .flatMap((agent) => agent.transitions())
      .filter((t) => t.state === 'dead' && t.subject !== isolated.name && t.observer !== isolated.name);
    expect(wrong).toEqual([]);
  });
});
