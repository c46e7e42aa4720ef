import { describe, expect, it } from 'vitest';
import { UpdateDelivery } from './delivery.ts';
import type { SchedulerEvent, StatusUpdate } from './types.ts';

const update = (uuid: string, taskId: string): StatusUpdate => ({
  uuid,
  taskId,
  status: { state: 'TASK_RUNNING', message: '', nodeId: 'n', atMs: 0 },
});
const uuids = (events: readonly SchedulerEvent[]): (string | null)[] =>
  events.map((event) => (event.type === 'UPDATE' ? event.uuid : null));

describe('redelivery of status updates', () => {
  it('sends each task’s oldest update at once, then again with doubling intervals until acknowledged', () => {
    const delivery = new UpdateDelivery({ retryMsInitial: 10, retryMsMax: 40 });
    const pending = [update('u0', 'a'), update('u1', 'a'), update('u2', 'b')];
    expect(uuids(delivery.due('f', pending, 0))).toEqual(['u0', 'u2']);
    expect(delivery.due('f', pending, 9)).toEqual([]);
    expect(delivery.nextDueAtMs('f')).toBe(10);
    expect(uuids(delivery.due('f', pending, 10))).toEqual(['u0', 'u2']);
    expect(delivery.due('f', pending, 29)).toEqual([]);
    expect(uuids(delivery.due('f', pending, 30))).toEqual(['u0', 'u2']);
    expect(delivery.nextDueAtMs('f')).toBe(70);
    expect(uuids(delivery.due('f', pending, 70))).toEqual(['u0', 'u2']);
    expect(delivery.nextDueAtMs('f')).toBe(110);
    // u0 acknowledged: u1 is a's head and goes at once.
    expect(uuids(delivery.due('f', pending.slice(1), 71))).toEqual(['u1']);
  });

  it('a new subscription sends everything pending at once', () => {
    const delivery = new UpdateDelivery();
    const pending = [update('u0', 'a')];
    delivery.due('f', pending, 0);
    expect(delivery.due('f', pending, 1)).toEqual([]);
    delivery.reset('f');
    expect(uuids(delivery.due('f', pending, 2))).toEqual(['u0']);
    expect(delivery.due('f', [], 3)).toEqual([]);
    expect(delivery.nextDueAtMs('f')).toBeNull();
  });
});
