import { describe, expect, it } from 'vitest';
import type { Task, TaskSpec } from '../cluster/index.ts';
import { innerPort, portVariableName, taskDeviceFiles, taskEnvironment } from './task-env.ts';

const spec = (extra: Partial<TaskSpec> = {}): TaskSpec => ({
  name: 'web-0',
  driver: 'exec',
  command: ['httpd'],
  cpuMillis: 100,
  memoryBytes: 32 * 1024 * 1024,
  priority: 50,
  env: {},
  constraints: {},
  ...extra,
});

const task = (extra: Partial<TaskSpec>, hostPorts?: Record<string, number>): Task => ({
  id: 'aaaaaaaaaaaa',
  spec: spec(extra),
  submitIndex: 1,
  submittedAtMs: 0,
  desired: 'run',
  state: 'assigned',
  nodeId: 'n1',
  attempt: 0,
  notBeforeMs: null,
  exitCode: null,
  reason: null,
  updatedAtMs: 0,
  events: [],
  ...(hostPorts === undefined ? {} : { hostPorts }),
});

describe('the variables a task gets', () => {
  it('names the task, its job and node, and for each port the port to bind, the host port and the address', () => {
    const env = taskEnvironment(
      task(
        { job: 'web', dynamicPorts: ['http'], ports: { 'metrics-v2': 9100 } },
        { http: 21_000, 'metrics-v2': 9100 },
      ),
      { name: 'n1', host: '10.0.0.7' },
      '/data/tasks/aaaaaaaaaaaa',
    );
    expect(env).toEqual({
      SHOAL_TASK_ID: 'aaaaaaaaaaaa',
      SHOAL_TASK_NAME: 'web-0',
      SHOAL_JOB: 'web',
      SHOAL_NAMESPACE: 'default',
      SHOAL_NODE: 'n1',
      SHOAL_TASK_DIR: '/data/tasks/aaaaaaaaaaaa',
      SHOAL_PORT_METRICS_V2: '9100',
      SHOAL_HOST_PORT_METRICS_V2: '9100',
      SHOAL_ADDR_METRICS_V2: '10.0.0.7:9100',
      SHOAL_PORT_HTTP: '21000',
      SHOAL_HOST_PORT_HTTP: '21000',
      SHOAL_ADDR_HTTP: '10.0.0.7:21000',
    });
  });

  it('binds a docker bridge task to its container port, and others to the host port', () => {
    const bridged = task(
      { driver: 'docker', image: 'x', dynamicPorts: ['http'], portTargets: { http: 80 } },
      { http: 21_000 },
    );
    expect(innerPort(bridged, 'http')).toBe(80);
    expect(taskEnvironment(bridged, { name: 'n1', host: '10.0.0.7' }, '/t')).toMatchObject({
      SHOAL_PORT_HTTP: '80',
      SHOAL_HOST_PORT_HTTP: '21000',
      SHOAL_ADDR_HTTP: '10.0.0.7:21000',
    });
    const noTarget = task({ driver: 'docker', image: 'x', dynamicPorts: ['http'] }, { http: 21_000 });
    expect(innerPort(noTarget, 'http')).toBe(21_000);
    const host = task(
      { driver: 'docker', image: 'x', network: 'host', dynamicPorts: ['http'], portTargets: { http: 80 } },
      { http: 21_000 },
    );
    expect(innerPort(host, 'http')).toBe(21_000);
    expect(innerPort(task({}), 'http')).toBeUndefined();
  });

  it('makes variable names of port names', () => {
    expect(portVariableName('http')).toBe('HTTP');
    expect(portVariableName('grpc.admin/v1')).toBe('GRPC_ADMIN_V1');
  });
});

describe('devices', () => {
  const holding: Task = {
    ...task({ devices: { gpu: 2, fpga: 1 } }),
    deviceSlots: { gpu: [1, 3], fpga: [0] },
  };
  const node = {
    name: 'n1',
    host: '10.0.0.7',
    deviceFiles: { gpu: ['/dev/g0', '/dev/g1', '/dev/g2', '/dev/g3'] },
  };

  it('names the device files a task holds, or its slots where the node named no files', () => {
    const env = taskEnvironment(holding, node, '/data/tasks/x');
    expect(env['SHOAL_DEVICES_GPU']).toBe('/dev/g1,/dev/g3');
    expect(env['SHOAL_DEVICES_FPGA']).toBe('0');
    expect(taskDeviceFiles(holding, node)).toEqual([
      { kind: 'gpu', path: '/dev/g1' },
      { kind: 'gpu', path: '/dev/g3' },
    ]);
  });
});
