/**
 * Automatic voter management with real agents: a cluster grown one node at a time from 1 to 7 settles
 * at 5 voters and 2 learners; when 2 voters die, it replaces them and ends with 5 healthy voters, with
 * no operator action.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { TestCluster, buildBinary, waitFor, type TestAgent } from '../helpers/cluster.ts';
import type { StatusView } from '../../src/api/index.ts';

type StatusRow = StatusView;

describe('automatic voters', { timeout: 900_000 }, () => {
  const cluster = new TestCluster();
  afterAll(async () => {
    await cluster.stop();
  }, 120_000);

  it('grows 1 → 7 one node at a time (odd voter counts up to 5), then replaces 2 dead voters', async () => {
    await buildBinary();
    const extraArgs = ['--voter-removal-delay', '3'];
    const agents: TestAgent[] = [await cluster.agent({ name: 'v1', extraArgs })];
    const key = await waitFor('the cluster key', () =>
      Promise.resolve(/--key ([0-9a-f]{64})/.exec(agents[0]!.log())?.[1] ?? null),
    );
    const status = (): Promise<StatusRow> => agents[0]!.json<StatusRow>(['status']);
    const expectedVoters = [1, 1, 3, 3, 5, 5, 5];
    for (let n = 2; n <= 7; n++) {
      agents.push(await cluster.agent({ name: `v${n}`, join: agents[0]!.address, key, extraArgs }));
      await waitFor(
        `${n} nodes: ${expectedVoters[n - 1]} voters`,
        async () => {
          const s = await status();
          return s.voters.length === expectedVoters[n - 1] && s.voters.length + s.learners.length === n;
        },
        180_000,
      );
    }
    const grown = await status();
    expect(grown.voters).toHaveLength(5);
    expect(grown.learners).toHaveLength(2);

    // Two voters that are not the leader die.
    const leaderName = grown.leader?.name;
    const victims = grown.voters
      .map((v) => v.name)
      .filter((name) => name !== leaderName)
      .slice(0, 2);
    for (const victim of victims) agents.find((a) => a.name === victim)!.kill('SIGKILL');
    const survivor = agents.find((a) => !victims.includes(a.name))!;
    const healed = await waitFor(
      'five healthy voters again',
      async () => {
        const s = await survivor.json<StatusRow>(['status']);
        const names = s.voters.map((v) => v.name);
        return names.length === 5 && names.every((name) => !victims.includes(name)) ? s : null;
      },
      240_000,
    );
    expect(healed.voters.map((v) => v.name)).not.toContain(victims[0]);
  });
});
