import { describe, expect, it } from 'vitest';
import { MembershipState, type NodeRecord } from './state.ts';

const record = (id: string, incarnation: number, heartbeat: number, leaving = false): NodeRecord => ({
  id,
  name: id,
  addresses: [],
  address: '127.0.0.1:1',
  cpuMillis: 1000,
  memoryBytes: 1,
  labels: {},
  drivers: ['exec'],
  version: 'test',
  incarnation,
  heartbeat,
  leaving,
});

describe('MembershipState', () => {
  it('marks a silent member suspect, then dead, and alive again when it is heard with a newer record', () => {
    const state = new MembershipState('self', { suspectAfterMs: 3000, deadAfterMs: 6000 });
    expect(state.observe(record('b', 1, 1), 0)).toEqual({ id: 'b', from: null, to: 'alive' });
    expect(state.tick(2999)).toEqual([]);
    expect(state.tick(3000)).toEqual([{ id: 'b', from: 'alive', to: 'suspect' }]);
    expect(state.tick(6000)).toEqual([{ id: 'b', from: 'suspect', to: 'dead' }]);
    // An old record (a gossip echo) does not revive it; a restart (higher incarnation) does.
    expect(state.observe(record('b', 1, 1), 6100)).toBeNull();
    expect(state.observe(record('b', 2, 0), 6200)).toEqual({ id: 'b', from: 'dead', to: 'alive' });
  });

  it('never lets an older record overwrite a newer one', () => {
    const state = new MembershipState('self', { suspectAfterMs: 3000, deadAfterMs: 6000 });
    state.observe(record('b', 2, 5), 0);
    state.observe(record('b', 2, 4), 1);
    state.observe(record('b', 1, 99), 2);
    expect(state.get('b')?.record).toMatchObject({ incarnation: 2, heartbeat: 5 });
  });

  it('a graceful leave is "left", not a failure, and is not aged into dead', () => {
    const state = new MembershipState('self', { suspectAfterMs: 3000, deadAfterMs: 6000 });
    state.observe(record('b', 1, 1), 0);
    expect(state.observe(record('b', 1, 2, true), 10)).toEqual({ id: 'b', from: 'alive', to: 'left' });
    expect(state.tick(60_000)).toEqual([]);
  });
});
