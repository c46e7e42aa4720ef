import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import {
  followTaskLogs,
  logsLimitBytesDefault,
  readTaskLogs,
  RotatingLogFile,
  type LogChunk,
  type LogRotation,
} from '../../src/runtime/drivers/index.ts';
import { isShoalError } from '../../src/shared/index.ts';

const dirs: string[] = [];
const makeDir = async (): Promise<string> => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-logs-test-'));
  dirs.push(dir);
  return dir;
};
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function write(file: RotatingLogFile, text: string): Promise<void> {
  await new Promise<void>((resolve, reject) =>
    file.write(text, (error) => (error ? reject(error) : resolve())),
  );
}

async function close(file: RotatingLogFile): Promise<void> {
  file.end();
  await finished(file);
}

/** The stream's files, oldest first, as text. */
async function filesOf(dir: string, base: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((name) => name === base || name.startsWith(`${base}.`));
  const index = (name: string): number => (name === base ? 0 : Number(name.slice(base.length + 1)));
  names.sort((a, b) => index(b) - index(a));
  return Promise.all(names.map((name) => readFile(join(dir, name), 'utf8')));
}

describe('readTaskLogs', () => {
  it('reads missing files, and a missing directory, as empty', async () => {
    const dir = await makeDir();
    expect(await readTaskLogs(dir)).toEqual({ stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) });
    expect(await readTaskLogs(join(dir, 'not-there'), { tailBytes: 10 })).toEqual({
      stdout: Buffer.alloc(0),
      stderr: Buffer.alloc(0),
    });
  });

  it('returns the tail of each stream', async () => {
    const dir = await makeDir();
    await writeFile(join(dir, 'stdout.log'), 'first\nsecond\n');
    await writeFile(join(dir, 'stderr.log'), 'oops\n');
    const logs = await readTaskLogs(dir, { tailBytes: 7 });
    expect(logs.stdout.toString('utf8')).toBe('second\n');
    expect(logs.stderr.toString('utf8')).toBe('oops\n');
    expect((await readTaskLogs(dir, { tailBytes: 0 })).stdout.length).toBe(0);
  });

  it('reads the tail across rotated files, newest last', async () => {
    const dir = await makeDir();
    await writeFile(join(dir, 'stdout.log.2'), 'one\n');
    await writeFile(join(dir, 'stdout.log.1'), 'two\n');
    await writeFile(join(dir, 'stdout.log'), 'three\n');
    expect((await readTaskLogs(dir)).stdout.toString('utf8')).toBe('one\ntwo\nthree\n');
    expect((await readTaskLogs(dir, { tailBytes: 8 })).stdout.toString('utf8')).toBe('o\nthree\n');
    // A rotation in progress: the live file renamed, the new one not created yet.
    await rm(join(dir, 'stdout.log'));
    expect((await readTaskLogs(dir)).stdout.toString('utf8')).toBe('one\ntwo\n');
  });

  it('caps what it returns at logsLimitBytesDefault when no tail is named', async () => {
    const dir = await makeDir();
    await writeFile(join(dir, 'stdout.log'), Buffer.alloc(logsLimitBytesDefault + 10, 'a'));
    expect((await readTaskLogs(dir)).stdout.length).toBe(logsLimitBytesDefault);
  });

  it('rejects a tail that is not a non-negative integer', async () => {
    const dir = await makeDir();
    await expect(readTaskLogs(dir, { tailBytes: -1 })).rejects.toSatisfy((error) =>
      isShoalError(error, 'INVALID_ARGUMENT'),
    );
  });
});

describe('RotatingLogFile', () => {
  const rotation: LogRotation = { fileBytesMax: 10, filesMax: 3 };

  it('rotates before a file would pass its cap, keeps filesMax files, and drops the oldest', async () => {
    const dir = await makeDir();
    const file = new RotatingLogFile(join(dir, 'stdout.log'), rotation);
    for (const line of ['aaaa\n', 'bbbb\n', 'cccc\n', 'dddd\n', 'eeee\n', 'ffff\n', 'gggg\n', 'hhhh\n']) {
      await write(file, line);
    }
    await close(file);
    // Lines stay whole: a write that does not fit what is left of a file starts the next one.
    expect(await filesOf(dir, 'stdout.log')).toEqual(['cccc\ndddd\n', 'eeee\nffff\n', 'gggg\nhhhh\n']);
  });

  it('splits a write larger than the cap, and appends to what a file already held', async () => {
    const dir = await makeDir();
    await writeFile(join(dir, 'stdout.log'), 'held\n');
    const file = new RotatingLogFile(join(dir, 'stdout.log'), rotation);
    await write(file, '0123456789abcdefghij+');
    await close(file);
    // Too large for any one file: it fills what is left of the current one first.
    expect(await filesOf(dir, 'stdout.log')).toEqual(['held\n01234', '56789abcde', 'fghij+']);
    expect((await readTaskLogs(dir)).stdout.toString('utf8')).toBe('held\n0123456789abcdefghij+');
  });

  it('starts over in one file when filesMax is 1, and rejects a rotation that makes no sense', async () => {
    const dir = await makeDir();
    const file = new RotatingLogFile(join(dir, 'out.log'), { fileBytesMax: 6, filesMax: 1 });
    await write(file, 'first\n');
    await write(file, 'second');
    await close(file);
    expect(await filesOf(dir, 'out.log')).toEqual(['second']);
    expect(() => new RotatingLogFile(join(dir, 'x.log'), { fileBytesMax: 0, filesMax: 3 })).toThrow(
      /fileBytesMax must be a positive integer/,
    );
  });
});

/** Collects what followTaskLogs yields, per stream, until aborted. */
function collect(
  dir: string,
  options: { fromBytes?: number },
): { abort: () => Promise<void>; text: (stream: 'stdout' | 'stderr') => string; chunks: LogChunk[] } {
  const controller = new AbortController();
  const chunks: LogChunk[] = [];
  const done = (async () => {
    for await (const chunk of followTaskLogs(dir, {
      ...options,
      signal: controller.signal,
      pollIntervalMs: 50,
    })) {
      chunks.push(chunk);
    }
  })();
  return {
    chunks,
    text: (stream) =>
      Buffer.concat(chunks.filter((chunk) => chunk.stream === stream).map((chunk) => chunk.data)).toString(
        'utf8',
      ),
    abort: async () => {
      controller.abort();
      await done;
    },
  };
}

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadlineMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(10);
  }
}

describe('followTaskLogs', () => {
  it('follows new output across rotation, in order, until aborted', async () => {
    const dir = await makeDir();
    const file = new RotatingLogFile(join(dir, 'stdout.log'), { fileBytesMax: 100, filesMax: 3 });
    await write(file, 'earlier\nbefore\n');
    // Seeing the replay of the last 7 bytes tells the follower is in place.
    const follower = collect(dir, { fromBytes: 7 });
    await until('the follower replays the tail', () => follower.text('stdout') === 'before\n');
    await write(file, 'mark\n');
    const lines = Array.from({ length: 60 }, (_, index) => `line ${String(index).padStart(3, '0')}\n`);
    for (const line of lines) {
      await write(file, line);
      await sleep(2);
    }
    const expected = `before\nmark\n${lines.join('')}`;
    await until('the follower sees every line', () => follower.text('stdout').length >= expected.length);
    await follower.abort();
    expect(follower.text('stdout')).toBe(expected);
    await close(file);
  });

  it('replays the last fromBytes first, across rotated files, then follows both streams', async () => {
    const dir = await makeDir();
    await writeFile(join(dir, 'stdout.log.1'), 'older\n');
    await writeFile(join(dir, 'stdout.log'), 'newer\n');
    await writeFile(join(dir, 'stderr.log'), 'err\n');
    const follower = collect(dir, { fromBytes: 8 });
    await until(
      'the replay arrives',
      () => follower.text('stdout') === 'r\nnewer\n' && follower.text('stderr') === 'err\n',
    );
    const stderr = new RotatingLogFile(join(dir, 'stderr.log'));
    await write(stderr, 'more\n');
    await until('new stderr arrives', () => follower.text('stderr') === 'err\nmore\n');
    await follower.abort();
    await close(stderr);
    expect(follower.chunks.every((chunk) => chunk.data.length > 0)).toBe(true);
  });

  it('waits for a task directory and files that do not exist yet', async () => {
    const dir = join(await makeDir(), 'task');
    const follower = collect(dir, { fromBytes: Infinity });
    await sleep(100);
    await mkdir(dir);
    const file = new RotatingLogFile(join(dir, 'stdout.log'));
    await write(file, 'hello\n');
    await until('output of a new file arrives', () => follower.text('stdout') === 'hello\n');
    await follower.abort();
    await close(file);
  });

  it('ends at once when aborted, and rejects a bad fromBytes', async () => {
    const dir = await makeDir();
    const follower = collect(dir, {});
    await sleep(50);
    const startedMs = Date.now();
    await follower.abort();
    expect(Date.now() - startedMs).toBeLessThan(1000);
    const bad = followTaskLogs(dir, { fromBytes: -1 });
    await expect(bad.next()).rejects.toSatisfy((error) => isShoalError(error, 'INVALID_ARGUMENT'));
  });
});
