/**
 * The image store against a real registry (Debian's docker-registry, the reference implementation): an
 * image built here without Docker (two tar layers made with tar-stream, a config, a docker v2 manifest),
 * pushed over the registry API, then pulled, unpacked with its whiteouts, served again from the store,
 * refused when a layer is corrupted in the registry's storage, and collected once unused for a day.
 */
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  openSync,
  writeSync,
  closeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageStore } from '../../src/runtime/images/index.ts';
import { isShoalError, silentLogger } from '../../src/shared/index.ts';
import {
  buildImage as buildLayers,
  registrySkipReason as skipReason,
  startRegistry,
  type BuiltImage,
  type TestRegistry,
} from '../helpers/registry.ts';

if (skipReason !== null) console.warn(`image store integration test skipped: ${skipReason}`);

const dayMs = 24 * 60 * 60_000;

/** The test image: two gzip layers (the second whites out part of the first), its config and manifest. */
function buildImage(): Promise<BuiltImage> {
  return buildLayers(
    [
      [
        { name: 'etc/', type: 'directory', mode: 0o755 },
        { name: 'etc/os-release', content: 'ID=shoaltest\n', mode: 0o644 },
        { name: 'bin/', type: 'directory', mode: 0o755 },
        { name: 'bin/hello', content: '#!/bin/sh\necho "hello $1"\n', mode: 0o755 },
        { name: 'old/', type: 'directory', mode: 0o755 },
        { name: 'old/file', content: 'from layer 1\n' },
        { name: 'opq/', type: 'directory', mode: 0o755 },
        { name: 'opq/a', content: 'a\n' },
      ],
      [
        { name: 'old/', type: 'directory', mode: 0o755 },
        { name: 'old/.wh.file' },
        { name: 'opq/', type: 'directory', mode: 0o755 },
        { name: 'opq/.wh..wh..opq' },
        { name: 'opq/b', content: 'b\n' },
        { name: 'work/', type: 'directory', mode: 0o755 },
      ],
    ],
    {
      Entrypoint: ['/bin/hello'],
      Cmd: ['world'],
      Env: ['A=1', 'PATH=/bin'],
      User: '1000',
      WorkingDir: '/work',
    },
  );
}

/** Every file under `dir`, relative. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' });
}

describe.skipIf(skipReason !== null)(
  `the image store against docker-registry${skipReason === null ? '' : ` (skipped: ${skipReason})`}`,
  () => {
    const work = mkdtempSync(join(tmpdir(), 'shoal-images-test-'));
    let registry: TestRegistry | null = null;
    let host = '';
    let image: BuiltImage;
    const repository = 'shoal/test';
    /** Requests made through the store's fetch, as "METHOD PATH". */
    const requests: string[] = [];
    const countingFetch = ((input: string | URL | Request, init?: RequestInit) => {
      requests.push(
        `${init?.method ?? 'GET'} ${new URL(input instanceof Request ? input.url : input.toString()).pathname}`,
      );
      return fetch(input, init);
    }) as typeof fetch;
    const storeAt = (name: string): ImageStore =>
      new ImageStore({ dir: join(work, name), logger: silentLogger, fetch: countingFetch });

    beforeAll(async () => {
      registry = await startRegistry(work);
      host = registry.host;
      image = await buildImage();
      await registry.push(repository, 'v1', image);
    });

    afterAll(() => {
      registry?.stop();
      rmSync(work, { recursive: true, force: true });
    });

    it('pulls the image into a root filesystem with its whiteouts applied and its run config', async () => {
      const store = storeAt('store');
      const lines: string[] = [];
      const pulled = await store.pull(`${host}/${repository}:v1`, { onProgress: (line) => lines.push(line) });
      expect(pulled.digest).toBe(image.manifest.digest);
      expect(pulled.ref).toBe(`${host}/${repository}:v1`);
      expect(readFileSync(join(pulled.rootfs, 'etc/os-release'), 'utf8')).toBe('ID=shoaltest\n');
      expect(existsSync(join(pulled.rootfs, 'old/file'))).toBe(false);
      expect(readdirSync(join(pulled.rootfs, 'opq'))).toEqual(['b']);
      expect(pulled.config).toEqual({
        entrypoint: ['/bin/hello'],
        cmd: ['world'],
        env: ['A=1', 'PATH=/bin'],
        user: '1000',
        workingDir: '/work',
      });
      const ids = image.layers.map((layer) => layer.digest.slice('sha256:'.length, 'sha256:'.length + 12));
      expect(lines[0]).toBe(`pulling image ${host}/${repository}:v1`);
      for (const id of ids) {
        expect(lines).toContain(`${id}: Pull complete`);
        expect(lines.some((line) => line.startsWith(`${id}: Downloading `) && line.endsWith(' MB'))).toBe(
          true,
        );
      }
      expect(lines.at(-1)).toMatch(
        new RegExp(
          `^pulled image ${host}/${repository}:v1 \\(digest ${image.manifest.digest}\\) in [0-9.]+ s$`,
        ),
      );

      // Again: the registry is asked which digest the tag names, and nothing is downloaded.
      requests.length = 0;
      const again = await store.pull(`${host}/${repository}:v1`);
      expect(again.rootfs).toBe(pulled.rootfs);
      expect(requests).toEqual([`HEAD /v2/${repository}/manifests/v1`]);

      // By digest: served from the store without asking at all.
      requests.length = 0;
      const byDigest = await store.pull(`${host}/${repository}@${image.manifest.digest}`);
      expect(byDigest.digest).toBe(image.manifest.digest);
      expect(requests).toEqual([]);
    });

    it('pulls by digest into an empty store, and shares one download between concurrent pulls', async () => {
      const store = storeAt('concurrent');
      requests.length = 0;
      const [first, second] = await Promise.all([
        store.pull(`${host}/${repository}@${image.manifest.digest}`),
        store.pull(`${host}/${repository}@${image.manifest.digest}`),
      ]);
      expect(second.rootfs).toBe(first.rootfs);
      const blobGets = requests.filter((line) => line.includes('/blobs/'));
      expect(blobGets.sort()).toEqual(
        [image.config, ...image.layers]
          .map((content) => `GET /v2/${repository}/blobs/${content.digest}`)
          .sort(),
      );
    });

    it('says an unknown tag is not found, in one line', async () => {
      const error = await storeAt('missing')
        .pull(`${host}/${repository}:nope`)
        .then(
          () => null,
          (caught: unknown) => caught,
        );
      expect(isShoalError(error, 'NOT_FOUND')).toBe(true);
      expect((error as Error).message).toBe(`image ${host}/${repository}:nope not found in ${host}`);
    });

    it('collects an image only once no task has used it for a day, with its blobs', async () => {
      const nowMs = Date.now();
      const dir = join(work, 'collect');
      const store = new ImageStore({ dir, logger: silentLogger, fetch: countingFetch, nowMs: () => nowMs });
      const pulled = await store.pull(`${host}/${repository}:v1`);
      await store.acquire(pulled.digest, 'task-1');
      expect(await store.collect(nowMs + 2 * dayMs)).toEqual({ images: [], blobs: [] });
      expect(existsSync(pulled.rootfs)).toBe(true);

      await store.release(pulled.digest, 'task-1');
      expect(await store.collect(nowMs + dayMs - 1)).toEqual({ images: [], blobs: [] });
      const report = await store.collect(nowMs + dayMs);
      expect(report.images).toEqual([pulled.digest]);
      expect(report.blobs.sort()).toEqual(
        [image.manifest, image.config, ...image.layers].map((content) => content.digest).sort(),
      );
      expect(existsSync(pulled.rootfs)).toBe(false);
      expect(filesUnder(join(dir, 'images'))).toEqual([]);
      expect(filesUnder(join(dir, 'blobs', 'sha256'))).toEqual([]);
      // A store opened anew over the same directory finds nothing either.
      expect(await new ImageStore({ dir, logger: silentLogger }).collect(nowMs)).toEqual({
        images: [],
        blobs: [],
      });
    });

    // Last: it corrupts the registry's copy of the first layer.
    it('refuses a corrupted layer by its digest and leaves nothing half-made in the store', async () => {
      const hex = image.layers[0]?.digest.slice('sha256:'.length) ?? '';
      const data = join(
        work,
        'registry',
        'docker',
        'registry',
        'v2',
        'blobs',
        'sha256',
        hex.slice(0, 2),
        hex,
        'data',
      );
      expect(existsSync(data)).toBe(true);
      const fd = openSync(data, 'r+');
      writeSync(fd, Buffer.from('corrupt!'), 0, 8, 20);
      closeSync(fd);

      const dir = join(work, 'fresh');
      const error = await new ImageStore({ dir, logger: silentLogger, fetch: countingFetch })
        .pull(`${host}/${repository}:v1`)
        .then(
          () => null,
          (caught: unknown) => caught,
        );
      expect(isShoalError(error, 'CORRUPT_DATA')).toBe(true);
      const message = (error as Error).message;
      expect(message).toMatch(
        new RegExp(
          `^layer ${hex.slice(0, 12)} of ${host}/${repository}:v1 refused: expected sha256:${hex}, got sha256:[0-9a-f]{64}$`,
        ),
      );
      expect(filesUnder(join(dir, 'rootfs'))).toEqual([]);
      expect(filesUnder(join(dir, 'images'))).toEqual([]);
      expect(filesUnder(join(dir, 'tmp'))).toEqual([]);
      expect(filesUnder(join(dir, 'blobs', 'sha256'))).not.toContain(hex);
    });
  },
);
