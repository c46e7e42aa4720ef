import { createHash } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zstdCompressSync, gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { isShoalError } from '../../shared/index.ts';
import { tarOf, type TarEntry } from '../../../test/helpers/registry.ts';
import { detectCompression, entryComponents, RootfsBuilder } from './unpack.ts';

type Entry = TarEntry;

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** Applies the layers in order into a fresh directory; returns it and the builder's notes. */
async function unpack(
  layers: readonly (readonly Entry[])[],
  compress: (tar: Buffer) => Buffer = gzipSync,
): Promise<{ root: string; notes: string[] }> {
  const work = mkdtempSync(join(tmpdir(), 'shoal-unpack-test-'));
  dirs.push(work);
  const root = join(work, 'root');
  mkdirSync(root);
  const notes: string[] = [];
  const builder = new RootfsBuilder({ root, onNote: (line) => notes.push(line) });
  for (const [index, entries] of layers.entries()) {
    const path = join(work, `layer${index}`);
    writeFileSync(path, compress(await tarOf(entries)));
    await builder.applyLayer(path, `layer ${index}`);
  }
  await builder.finish();
  return { root, notes };
}

async function refusal(layers: readonly (readonly Entry[])[]): Promise<string> {
  const error = await unpack(layers).then(
    () => null,
    (caught: unknown) => caught,
  );
  expect(isShoalError(error, 'CORRUPT_DATA')).toBe(true);
  return (error as Error).message;
}

describe('unpacking layers', () => {
  it('applies whiteouts and opaque directories to what earlier layers left', async () => {
    const { root } = await unpack([
      [
        { name: 'etc/', type: 'directory', mode: 0o755 },
        { name: 'etc/os-release', content: 'ID=shoaltest\n', mode: 0o644 },
        { name: 'old/', type: 'directory' },
        { name: 'old/file', content: 'gone' },
        { name: 'old/kept', content: 'kept' },
        { name: 'opq/', type: 'directory' },
        { name: 'opq/a', content: 'a' },
        { name: 'opq/sub/', type: 'directory' },
        { name: 'opq/sub/deep', content: 'deep' },
        { name: 'tree/x/y', content: 'y' },
      ],
      [
        // Written before the opaque marker in the same layer: it must survive it.
        { name: 'opq/b', content: 'b' },
        { name: 'opq/sub/new', content: 'new' },
        { name: 'opq/.wh..wh..opq' },
        { name: 'old/.wh.file' },
        { name: '.wh.tree' },
      ],
    ]);
    expect(readFileSync(join(root, 'etc/os-release'), 'utf8')).toBe('ID=shoaltest\n');
    expect(readdirSync(join(root, 'old'))).toEqual(['kept']);
    expect(readdirSync(join(root, 'opq')).sort()).toEqual(['b', 'sub']);
    expect(readdirSync(join(root, 'opq/sub'))).toEqual(['new']);
    expect(existsSync(join(root, 'tree'))).toBe(false);
  });

  it('keeps modes, mtimes, symlinks and hardlinks, and replaces what a later layer changes', async () => {
    const { root } = await unpack(
      [
        [
          { name: './', type: 'directory', mode: 0o755 },
          { name: 'bin/hello', content: '#!/bin/sh\necho hello\n', mode: 0o4755 },
          { name: 'usr/lib/libx', content: 'x' },
          { name: 'lib', type: 'symlink', linkname: '/usr/lib' },
          { name: 'ro/', type: 'directory', mode: 0o555 },
          { name: 'ro/file', content: 'r', mode: 0o444 },
          { name: 'was-dir/inner', content: 'i' },
        ],
        [
          // Through the absolute symlink lib -> /usr/lib: lands in root/usr/lib, as it would in the image.
          { name: 'lib/liby', content: 'y' },
          { name: 'bin/hi', type: 'link', linkname: 'bin/hello' },
          { name: 'was-dir', content: 'now a file' },
          { name: 'ro/file2', content: 'r2' },
        ],
      ],
      (plain) => plain,
    );
    expect(statSync(join(root, 'bin/hello')).mode & 0o7777).toBe(0o4755);
    expect(statSync(join(root, 'bin/hello')).mtimeMs).toBe(1_700_000_000_000);
    expect(readlinkSync(join(root, 'lib'))).toBe('/usr/lib');
    expect(readFileSync(join(root, 'usr/lib/liby'), 'utf8')).toBe('y');
    expect(statSync(join(root, 'bin/hi')).ino).toBe(statSync(join(root, 'bin/hello')).ino);
    expect(readFileSync(join(root, 'was-dir'), 'utf8')).toBe('now a file');
    expect(statSync(join(root, 'ro')).mode & 0o777).toBe(0o555);
    expect(statSync(join(root, 'ro')).mtimeMs).toBe(1_700_000_000_000);
    expect(readFileSync(join(root, 'ro/file2'), 'utf8')).toBe('r2');
    expect(lstatSync(join(root)).mode & 0o777).toBe(0o755);
  });

  it('skips device nodes with a note', async () => {
    const { root, notes } = await unpack([
      [
        { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3 },
        { name: 'etc/x', content: 'x' },
      ],
    ]);
    expect(existsSync(join(root, 'dev/null'))).toBe(false);
    expect(notes).toEqual([
      'layer 0: skipped character-device /dev/null (tasks get their devices from the runtime)',
    ]);
  });

  it('refuses entries that would leave the root', async () => {
    expect(await refusal([[{ name: '../escape', content: 'x' }]])).toBe(
      'layer 0 refused: entry "../escape": it contains ..',
    );
    expect(await refusal([[{ name: '/etc/passwd', content: 'x' }]])).toMatch(
      /"\/etc\/passwd": it is an absolute path/,
    );
    expect(await refusal([[{ name: 'a/../../b', content: 'x' }]])).toMatch(/it contains \.\./);
    expect(
      await refusal([
        [{ name: 'evil', type: 'symlink', linkname: '../../../../tmp' }],
        [{ name: 'evil/planted', content: 'x' }],
      ]),
    ).toBe('layer 1 refused: entry "evil/planted": it leads out of the image root through a symlink');
    expect(
      await refusal([
        [
          { name: 'loop', type: 'symlink', linkname: 'loop' },
          { name: 'loop/x', content: 'x' },
        ],
      ]),
    ).toMatch(/symlink loop/);
    expect(await refusal([[{ name: 'h', type: 'link', linkname: '../../etc/shadow' }]])).toMatch(
      /hardlink target \.\.\/\.\.\/etc\/shadow: it contains \.\./,
    );
  });

  it('refuses a layer that is not a tar, and one whose content does not match its diff id', async () => {
    const work = mkdtempSync(join(tmpdir(), 'shoal-unpack-test-'));
    dirs.push(work);
    mkdirSync(join(work, 'root'));
    const builder = new RootfsBuilder({ root: join(work, 'root') });
    writeFileSync(join(work, 'garbage'), gzipSync(Buffer.from('not a tar at all '.repeat(100))));
    await expect(builder.applyLayer(join(work, 'garbage'), 'layer g')).rejects.toThrow(
      /layer g is not a valid tar layer/,
    );
    const layer = await tarOf([{ name: 'a', content: 'a' }]);
    writeFileSync(join(work, 'zstd'), zstdCompressSync(layer));
    const diffId = `sha256:${createHash('sha256').update(layer).digest('hex')}`;
    await expect(builder.applyLayer(join(work, 'zstd'), 'layer z', { diffId })).resolves.toMatchObject({
      diffId,
    });
    await expect(
      builder.applyLayer(join(work, 'zstd'), 'layer z', { diffId: `sha256:${'0'.repeat(64)}` }),
    ).rejects.toThrow(
      `layer z refused: its uncompressed content is ${diffId} where the image config says sha256:${'0'.repeat(64)}`,
    );
  });

  it('tells compressions apart and names entries as components', () => {
    expect(detectCompression(Buffer.from([0x1f, 0x8b, 8, 0]))).toBe('gzip');
    expect(detectCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))).toBe('zstd');
    expect(detectCompression(Buffer.from('etc/'))).toBe('none');
    expect(entryComponents('./etc//os-release')).toEqual({ components: ['etc', 'os-release'] });
    expect(entryComponents('./')).toEqual({ components: [] });
  });
});
