import { describe, expect, it } from 'vitest';
import { downloadProgress, SharedWorks } from './store.ts';

describe('SharedWorks', () => {
  it('runs one work for concurrent callers, sends each its progress, and survives one giving up', async () => {
    const works = new SharedWorks<string>();
    let starts = 0;
    let finish: (value: string) => void = () => undefined;
    let workSignal: AbortSignal | null = null;
    const start = (signal: AbortSignal, emit: (line: string) => void): Promise<string> => {
      starts += 1;
      workSignal = signal;
      emit('started');
      return new Promise((resolve) => (finish = resolve));
    };
    const heardA: string[] = [];
    const heardB: string[] = [];
    const leaving = new AbortController();
    const a = works.run('k', leaving.signal, (line) => heardA.push(line), start);
    const b = works.run('k', undefined, (line) => heardB.push(line), start);
    expect(starts).toBe(1);
    leaving.abort(new Error('A gave up'));
    await expect(a).rejects.toThrow('A gave up');
    expect((workSignal as AbortSignal | null)?.aborted).toBe(false);
    finish('done');
    await expect(b).resolves.toBe('done');
    expect(heardA).toEqual(['started']);
    expect(heardB).toEqual([]); // joined after the first line
  });

  it('stops the work when every caller has given up, and answers the last once it has stopped', async () => {
    const works = new SharedWorks<string>();
    const events: string[] = [];
    const start = (signal: AbortSignal): Promise<string> =>
      new Promise((_resolve, reject) => {
        signal.addEventListener('abort', () => {
          setTimeout(() => {
            events.push('work stopped');
            reject(new Error('aborted'));
          }, 20);
        });
      });
    const caller = new AbortController();
    const waiting = works
      .run('k', caller.signal, () => undefined, start)
      .catch((error: unknown) => {
        events.push('caller answered');
        throw error;
      });
    caller.abort(new Error('gave up'));
    await expect(waiting).rejects.toThrow('gave up');
    expect(events).toEqual(['work stopped', 'caller answered']);
    // A new caller starts afresh rather than joining the stopped work.
    await expect(
      works.run(
        'k',
        undefined,
        () => undefined,
        () => Promise.resolve('again'),
      ),
    ).resolves.toBe('again');
  });
});

describe('downloadProgress', () => {
  it('sends the first line, then at most one a second', () => {
    let nowMs = 0;
    const line = downloadProgress('0123456789ab', 2_000_000, () => nowMs);
    expect(line(1000)).toBe('0123456789ab: Downloading 0.0 MB / 2.0 MB');
    nowMs = 999;
    expect(line(1_200_000)).toBeNull();
    nowMs = 1000;
    expect(line(1_200_000)).toBe('0123456789ab: Downloading 1.2 MB / 2.0 MB');
  });
});
