/**
 * The docker driver through the whole cluster path: an agent pointed at a real engine pulls the image
 * from the local registry, runs the task, and reports its exit code and output. Needs the engine that
 * .ci/run starts (SHOAL_TEST_DOCKER_SOCKET, SHOAL_TEST_DOCKER_IMAGE).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, buildBinary, waitFor, type TestAgent } from '../helpers/cluster.ts';

const socket = process.env['SHOAL_TEST_DOCKER_SOCKET'];
const image = process.env['SHOAL_TEST_DOCKER_IMAGE'];

describe.skipIf(socket === undefined || image === undefined)(
  'docker tasks through the cluster (needs SHOAL_TEST_DOCKER_SOCKET and SHOAL_TEST_DOCKER_IMAGE)',
  { timeout: 120_000 },
  () => {
    const cluster = new TestCluster();
    let agent: TestAgent;

    beforeAll(async () => {
      await buildBinary();
      agent = await cluster.agent({ name: 'd1', dockerSocket: socket ?? '' });
      await waitFor('the docker driver to be advertised', async () => {
        const members = await agent.json<{ drivers: string[] }[]>(['members']);
        return members[0]?.drivers.includes('docker') === true;
      });
    }, 120_000);

    afterAll(async () => {
      await cluster.stop();
    }, 60_000);

    it('runs a docker task and reports its exit code and output', async () => {
      const submitted = await agent.cli([
        'run',
        '--driver',
        'docker',
        '--image',
        image ?? '',
        '--memory',
        '32',
        '--',
        'sh',
        '-c',
        'echo from a container; exit 4',
      ]);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = submitted.stdout.trim();
      const task = await waitFor(
        'the container to exit',
        async () => {
          const tasks = await agent.json<{ id: string; state: string; exitCode: number | null }[]>(['ps']);
          const row = tasks.find((t) => t.id === id);
          return row?.state === 'failed' ? row : null;
        },
        90_000,
      );
      expect(task.exitCode).toBe(4);
      expect((await agent.cli(['logs', id])).stdout).toBe('from a container\n');
    });

    it('a missing image ends the task with a clear reason, and the agent keeps running', async () => {
      const submitted = await agent.cli([
        'run',
        '--driver',
        'docker',
        '--image',
        'local/does-not-exist:1',
        '--',
        'true',
      ]);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = submitted.stdout.trim();
      const task = await waitFor(
        'the task to fail',
        async () => {
          const tasks = await agent.json<{ id: string; state: string; reason: string | null }[]>(['ps']);
          const row = tasks.find((t) => t.id === id);
          return row?.state === 'failed' ? row : null;
        },
        90_000,
      );
      expect(task.reason).toMatch(/image not found: local\/does-not-exist:1/);
      expect((await agent.cli(['status'])).code).toBe(0);
    });
  },
);
