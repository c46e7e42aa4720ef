import { describe, expect, it } from 'vitest';
import type { EventFrame } from '../api/index.ts';
import type { ClusterEvent } from '../cluster/index.ts';
import { EventHub, EventRing } from './events.ts';

const at = new Date(0).toISOString();
const submitted = (index: number, taskId: string, namespace = 'default'): ClusterEvent => ({
  index,
  type: 'task:submitted',
  at,
  taskId,
  name: 'web',
  namespace,
  job: null,
  state: 'pending',
  attempt: 0,
});
const nodeUp = (index: number): ClusterEvent => ({ index, type: 'node:up', at, nodeId: 'n1', node: 'one' });

/** The indexes and task ids a ring holds from a start, in order. */
function read(ring: EventRing, index: number | null): { reset: number | null; items: string[] } {
  const start = ring.start(index);
  const items: string[] = [];
  for (let seq = start.seq; seq < ring.endSeq; seq++) {
    const item = ring.at(seq);
    if (item) items.push(`${item.index}${'taskId' in item ? item.taskId : item.type}`);
  }
  return { reset: start.reset, items };
}

describe('the event ring', () => {
  it('resumes after an index: only the events after it, several to an index included', () => {
    const ring = new EventRing(100);
    ring.append(1, [nodeUp(1)]);
    ring.append(2, [submitted(2, 'a'), submitted(2, 'b')]);
    ring.append(3, []);
    ring.append(4, [submitted(4, 'c')]);
    expect(ring.lastIndex).toBe(4);
    expect(read(ring, 0)).toEqual({ reset: null, items: ['1node:up', '2a', '2b', '4c'] });
    expect(read(ring, 1)).toEqual({ reset: null, items: ['2a', '2b', '4c'] });
    expect(read(ring, 2)).toEqual({ reset: null, items: ['4c'] });
    expect(read(ring, 3)).toEqual({ reset: null, items: ['4c'] });
    expect(read(ring, 4)).toEqual({ reset: null, items: [] });
    // From a node further ahead, or from now on: nothing yet.
    expect(read(ring, 9)).toEqual({ reset: null, items: [] });
    expect(read(ring, null)).toEqual({ reset: null, items: [] });
  });

  it('keeps at most its limit, and tells a reader from before the oldest kept to reset', () => {
    const ring = new EventRing(3);
    for (let index = 1; index <= 5; index++) ring.append(index, [submitted(index, `t${index}`)]);
    expect(ring.endSeq - ring.startSeq).toBe(3);
    expect(ring.at(0)).toBeUndefined();
    // Events 1 and 2 are gone: a reader who has up to 0 or 1 missed some; one who has 2 missed none.
    expect(read(ring, 0)).toEqual({ reset: 2, items: ['3t3', '4t4', '5t5'] });
    expect(read(ring, 1)).toEqual({ reset: 2, items: ['3t3', '4t4', '5t5'] });
    expect(read(ring, 2)).toEqual({ reset: null, items: ['3t3', '4t4', '5t5'] });
    // Dropped part way through an index: that index is no longer whole.
    const split = new EventRing(2);
    split.append(1, [submitted(1, 'a'), submitted(1, 'b'), submitted(1, 'c')]);
    expect(read(split, 0)).toEqual({ reset: 1, items: [] });
    split.append(2, [submitted(2, 'd')]);
    expect(read(split, 1)).toEqual({ reset: null, items: ['2d'] });
  });

  it('marks a snapshot: readers from before it reset, readers past it go on', () => {
    const ring = new EventRing(100);
    ring.append(1, [submitted(1, 'a')]);
    ring.reset(50);
    ring.append(51, [submitted(51, 'b')]);
    expect(ring.lastIndex).toBe(51);
    expect(read(ring, 0)).toEqual({ reset: 50, items: ['51b'] });
    expect(read(ring, 50)).toEqual({ reset: null, items: ['51b'] });
    // A reader positioned before the mark reads through it.
    const start = ring.start(0);
    expect(start.reset).toBe(50);
    expect(ring.at(ring.start(null).seq - 2)).toEqual({ type: 'reset', index: 50 });
  });

  it('refuses events out of index order', () => {
    const ring = new EventRing(10);
    ring.append(5, []);
    expect(() => ring.append(4, [])).toThrow(/index order/);
    expect(() => ring.append(6, [submitted(7, 'a')])).toThrow(/carries the index/);
  });
});

/** Reads frames from a stream until `count` have come (or the stream ends). */
async function take(stream: AsyncIterator<EventFrame>, count: number): Promise<EventFrame[]> {
  const frames: EventFrame[] = [];
  while (frames.length < count) {
    const next = await stream.next();
    if (next.done === true) break;
    frames.push(next.value);
  }
  return frames;
}

function open(
  hub: EventHub,
  index: number | null,
  filter: { task?: string; namespace?: string } = {},
): { stream: AsyncIterator<EventFrame>; stop: () => void } {
  const gone = new AbortController();
  const stream = hub.open(index, filter, gone.signal)[Symbol.asyncIterator]();
  return { stream, stop: () => gone.abort() };
}

describe('event streams', () => {
  it('sends the retained events after the index, a heartbeat, then new ones as they come', async () => {
    const hub = new EventHub();
    hub.append(1, [nodeUp(1)]);
    hub.append(2, [submitted(2, 'a')]);
    const { stream, stop } = open(hub, 1);
    expect(await take(stream, 2)).toEqual([submitted(2, 'a'), { type: 'heartbeat', index: 2 }]);
    const next = take(stream, 2);
    hub.append(3, [submitted(3, 'b'), submitted(3, 'c')]);
    expect(await next).toEqual([submitted(3, 'b'), submitted(3, 'c')]);
    stop();
    expect(await stream.next()).toEqual({ done: true, value: undefined });
    expect(hub.openStreams).toBe(0);
  });

  it('says reset first when the index is older than what the node keeps', async () => {
    const hub = new EventHub({ retainedMax: 2 });
    for (let index = 1; index <= 4; index++) hub.append(index, [submitted(index, `t${index}`)]);
    const { stream, stop } = open(hub, 0);
    expect(await take(stream, 4)).toEqual([
      { type: 'reset', index: 2 },
      submitted(3, 't3'),
      submitted(4, 't4'),
      { type: 'heartbeat', index: 4 },
    ]);
    // A snapshot installed while it reads: the stream says so where it happened.
    const next = take(stream, 2);
    hub.restored(20);
    hub.append(21, [submitted(21, 't21')]);
    expect(await next).toEqual([{ type: 'reset', index: 20 }, submitted(21, 't21')]);
    stop();
  });

  it('from now on without an index; only a task, or a namespace, when asked', async () => {
    const hub = new EventHub();
    hub.append(1, [submitted(1, 'a')]);
    const all = open(hub, null);
    const task = open(hub, 0, { task: 'b' });
    const team = open(hub, 0, { namespace: 'team' });
    expect(await take(all.stream, 1)).toEqual([{ type: 'heartbeat', index: 1 }]);
    expect(await take(task.stream, 1)).toEqual([{ type: 'heartbeat', index: 1 }]);
    hub.append(2, [nodeUp(2), submitted(2, 'b'), submitted(2, 'c', 'team')]);
    expect(await take(all.stream, 3)).toEqual([nodeUp(2), submitted(2, 'b'), submitted(2, 'c', 'team')]);
    expect(await take(task.stream, 1)).toEqual([submitted(2, 'b')]);
    // Read only now: what came meanwhile is in the ring, then the stream is caught up.
    expect(await take(team.stream, 2)).toEqual([submitted(2, 'c', 'team'), { type: 'heartbeat', index: 2 }]);
    for (const { stop } of [all, task, team]) stop();
  });

  it('sends a heartbeat when quiet, with the last index applied', async () => {
    const hub = new EventHub({ heartbeatIntervalMs: 20 });
    const { stream, stop } = open(hub, null, { task: 'x' });
    expect(await take(stream, 1)).toEqual([{ type: 'heartbeat', index: 0 }]);
    hub.append(7, [submitted(7, 'other')]);
    expect(await take(stream, 1)).toEqual([{ type: 'heartbeat', index: 7 }]);
    stop();
  });

  it('ends a stream whose reader fell out of the ring with an error line', async () => {
    const hub = new EventHub({ retainedMax: 3 });
    const { stream } = open(hub, null);
    expect(await take(stream, 1)).toEqual([{ type: 'heartbeat', index: 0 }]);
    // The reader takes nothing while five events come: its next one has left the ring.
    for (let index = 1; index <= 5; index++) hub.append(index, [submitted(index, `t${index}`)]);
    const rest = await take(stream, 10);
    expect(rest).toHaveLength(1);
    expect(rest[0]).toMatchObject({ type: 'error', error: { code: 'UNAVAILABLE' } });
    expect(hub.openStreams).toBe(0);
  });

  it('serves at most its number of streams; a stream that ends frees its place', async () => {
    const hub = new EventHub({ streamsMax: 2 });
    const first = open(hub, null);
    const second = open(hub, null);
    expect(() => open(hub, null)).toThrow(/serves 2 event streams already/);
    // Gone before it ever read.
    first.stop();
    const third = open(hub, null);
    expect(await take(third.stream, 1)).toEqual([{ type: 'heartbeat', index: 0 }]);
    hub.close();
    for (const { stream } of [second, third]) expect(await take(stream, 5)).toEqual([]);
    expect(hub.openStreams).toBe(0);
    expect(() => open(hub, null)).toThrow(/stopping/);
  });
});
