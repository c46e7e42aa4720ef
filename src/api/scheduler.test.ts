import { describe, expect, it } from 'vitest';
import { decodeSchedulerCall, encodeSchedulerEvent } from './scheduler.ts';

const spec = {
  name: 'copy',
  driver: 'exec',
  command: ['true'],
  cpuMillis: 100,
  memoryBytes: 64 * 1024 * 1024,
  priority: 50,
  env: {},
  constraints: {},
  ports: { http: 8080 },
};

describe('the scheduler wire format', () => {
  it("decodes SUBSCRIBE with Mesos's names and units into framework info", () => {
    expect(
      decodeSchedulerCall({
        type: 'SUBSCRIBE',
        subscribe: {
          framework_info: {
            name: 'batch',
            role: 'team-a',
            user: 'app',
            id: { value: 'fw-1' },
            failover_timeout: 2.5,
            capabilities: [{ type: 'PARTITION_AWARE' }],
          },
        },
      }),
    ).toEqual({
      type: 'SUBSCRIBE',
      frameworkId: 'fw-1',
      info: { name: 'batch', user: 'app', role: 'team-a', failoverTimeoutMs: 2500, partitionAware: true },
    });
  });

  it("decodes ACCEPT's launches with shoal task specs, their resources taken from the spec", () => {
    const call = decodeSchedulerCall({
      type: 'ACCEPT',
      framework_id: { value: 'fw-1' },
      accept: {
        offer_ids: [{ value: 'o1' }, { value: 'o2' }],
        operations: [
          {
            type: 'LAUNCH',
            launch: { task_infos: [{ task_id: { value: 't1' }, agent_id: { value: 'n1' }, spec }] },
          },
        ],
        filters: { refuse_seconds: 1.5 },
      },
    });
    expect(call).toMatchObject({
      type: 'ACCEPT',
      offerIds: ['o1', 'o2'],
      refuseMs: 1500,
      tasks: [{ taskId: 't1', nodeId: 'n1', resources: { cpuMillis: 100, ports: [8080] } }],
    });
  });

  it('refuses a malformed call in one line that names the field', () => {
    for (const body of [
      null,
      { type: 'LAUNCH_GROUP' },
      { type: 'SUBSCRIBE', subscribe: { framework_info: { name: 'x', role: 'not a namespace!' } } },
      { type: 'DECLINE', framework_id: { value: 'fw-1' }, decline: { offer_ids: [] } },
      {
        type: 'ACCEPT',
        framework_id: { value: 'fw-1' },
        accept: {
          offer_ids: [{ value: 'o' }],
          operations: [
            {
              type: 'LAUNCH',
              launch: {
                task_infos: [
                  { task_id: { value: 't' }, agent_id: { value: 'n' }, spec: { ...spec, cpuMillis: -1 } },
                ],
              },
            },
          ],
        },
      },
    ]) {
      let message = '';
      try {
        decodeSchedulerCall(body);
      } catch (error) {
        message = error instanceof Error ? error.message : String(error);
      }
      expect(message).toMatch(/^not a scheduler call \(type /);
      expect(message).not.toContain('\n');
    }
  });

  it('encodes events as Mesos names them, offers with their node and expiry', () => {
    const line = encodeSchedulerEvent(
      {
        type: 'OFFERS',
        frameworkId: 'fw-1',
        offers: [
          {
            id: 'e.1',
            frameworkId: 'fw-1',
            nodeId: 'n1',
            resources: { cpuMillis: 1500, memoryBytes: 1024 },
            offeredAtMs: 1000,
            expiresAtMs: 31_000,
          },
        ],
      },
      () => ({ name: 'one', labels: { zone: 'a' } }),
    );
    expect(line).toEqual({
      type: 'OFFERS',
      offers: {
        offers: [
          {
            id: { value: 'e.1' },
            framework_id: { value: 'fw-1' },
            agent_id: { value: 'n1' },
            hostname: 'one',
            resources: { cpu_millis: 1500, memory_bytes: 1024, disk_bytes: 0, devices: {}, ports: [] },
            attributes: { zone: 'a' },
            expires_at_ms: 31_000,
          },
        ],
      },
    });
    expect(
      encodeSchedulerEvent(
        {
          type: 'UPDATE',
          frameworkId: 'fw-1',
          taskId: 't1',
          status: { state: 'TASK_RUNNING', message: '', nodeId: 'n1', atMs: 2000 },
          uuid: 'u3',
        },
        () => undefined,
      ),
    ).toEqual({
      type: 'UPDATE',
      update: {
        status: {
          task_id: { value: 't1' },
          state: 'TASK_RUNNING',
          message: '',
          agent_id: { value: 'n1' },
          timestamp: 2,
          uuid: 'u3',
        },
      },
    });
  });
});
