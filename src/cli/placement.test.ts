import { describe, expect, it } from 'vitest';
import { parseCounts, parseLabelRule, parsePorts, placementSpec } from './placement.ts';

const none = {
  devices: [],
  ports: [],
  constraints: [],
  affinities: [],
  avoid: [],
  distinctNodes: false,
  spread: false,
  notPreemptible: false,
};

describe('placement flags', () => {
  it('parses every label rule form', () => {
    expect(parseLabelRule('zone=eu', '--constraint')).toEqual({ key: 'zone', operator: '=', value: 'eu' });
    expect(parseLabelRule('zone!=eu', '--constraint')).toEqual({ key: 'zone', operator: '!=', value: 'eu' });
    expect(parseLabelRule('host=~^web-[0-9]+$', '--constraint')).toEqual({
      key: 'host',
      operator: 'regex',
      pattern: '^web-[0-9]+$',
    });
    expect(parseLabelRule('zone in eu, us', '--constraint')).toEqual({
      key: 'zone',
      operator: 'in',
      values: ['eu', 'us'],
    });
    expect(parseLabelRule('zone notin eu,us', '--constraint')).toEqual({
      key: 'zone',
      operator: 'notIn',
      values: ['eu', 'us'],
    });
  });

  it('refuses what is not a rule, a count or a port, naming the flag', () => {
    expect(() => parseLabelRule('zone', '--constraint')).toThrow(/--constraint "zone" is not a label rule/);
    expect(() => parseCounts(['gpu=0'], '--device')).toThrow(/--device "gpu=0" is not KIND=COUNT/);
    expect(() => parseCounts(['gpu'], '--device')).toThrow(/KIND=COUNT/);
    expect(() => parsePorts(['http=70000'], '--port')).toThrow(/--port "http=70000" is not NAME=PORT/);
  });

  it('keeps plain equalities in constraints and the rest as rules, affinities and avoidances', () => {
    const spec = placementSpec({
      ...none,
      constraints: ['zone=eu', 'rack!=r1'],
      affinities: ['ssd=yes'],
      avoid: ['zone=us'],
      devices: ['gpu=2'],
      ports: ['http=8080'],
      disk: '100',
      namespace: 'team-a',
      job: 'web',
      maxRunning: '3',
      distinctNodes: true,
      spreadOver: 'zone',
      spread: true,
      notPreemptible: true,
    });
    expect(spec).toEqual({
      constraints: { zone: 'eu' },
      labelConstraints: [{ key: 'rack', operator: '!=', value: 'r1' }],
      affinities: [
        { constraint: { key: 'ssd', operator: '=', value: 'yes' }, weight: 50 },
        { constraint: { key: 'zone', operator: '=', value: 'us' }, weight: -50 },
      ],
      diskBytes: 100 * 1024 * 1024,
      devices: { gpu: 2 },
      ports: { http: 8080 },
      namespace: 'team-a',
      job: 'web',
      jobRunningMax: 3,
      distinctNodes: true,
      spreadOver: 'zone',
      packing: 'spread',
      preemptible: false,
    });
    expect(placementSpec(none)).toEqual({ constraints: {} });
  });
});
