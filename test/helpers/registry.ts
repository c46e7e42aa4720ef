/**
 * A real registry for tests (Debian's docker-registry, the reference implementation) and images built and
 * pushed without Docker: tar layers made with tar-stream, a config and a docker v2 manifest, over the
 * registry's HTTP API.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { freePort } from './cluster.ts';

/** A program's path in PATH, or null. */
export function which(program: string): string | null {
  try {
    return execFileSync('sh', ['-c', `command -v ${program}`], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

export const registryBinary = which('docker-registry');
/** Why registry tests cannot run here, or null. */
export const registrySkipReason =
  registryBinary === null ? 'needs docker-registry (apt-get install docker-registry)' : null;

export const sha256 = (bytes: Uint8Array): string =>
  `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

export type TarEntry = tar.Headers & { content?: string | Buffer };

export async function tarOf(entries: readonly TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk: Buffer) => chunks.push(chunk));
  const ended = new Promise((resolve) => pack.on('end', resolve));
  for (const { content, ...header } of entries) {
    await new Promise<void>((resolve, reject) => {
      pack.entry({ mtime: new Date(1_700_000_000_000), ...header }, content ?? '', (error) =>
        error ? reject(error) : resolve(),
      );
    });
  }
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

export interface Blob {
  bytes: Buffer;
  digest: string;
}

export function blob(bytes: Buffer): Blob {
  return { bytes, digest: sha256(bytes) };
}

export interface BuiltImage {
  layers: Blob[];
  config: Blob;
  manifest: Blob;
  diffIds: string[];
}

/** An image of gzip layers (each a tar's entries, in order) and the run config given. */
export async function buildImage(
  layerEntries: readonly (readonly TarEntry[])[],
  runConfig: Record<string, unknown>,
): Promise<BuiltImage> {
  const tars = await Promise.all(layerEntries.map((entries) => tarOf(entries)));
  const layers = tars.map((plain) => blob(gzipSync(plain)));
  const diffIds = tars.map((plain) => sha256(plain));
  const config = blob(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: runConfig,
        rootfs: { type: 'layers', diff_ids: diffIds },
      }),
    ),
  );
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
        config: {
          mediaType: 'application/vnd.docker.container.image.v1+json',
          size: config.bytes.length,
          digest: config.digest,
        },
        layers: layers.map((layer) => ({
          mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
          size: layer.bytes.length,
          digest: layer.digest,
        })),
      }),
    ),
  );
  return { layers, config, manifest, diffIds };
}

export interface TestRegistry {
  /** host:port */
  readonly host: string;
  /** http://host:port */
  readonly base: string;
  /** Where it keeps blobs (to corrupt one). */
  readonly storageDir: string;
  push(repository: string, tag: string, image: BuiltImage): Promise<void>;
  stop(): void;
}

/** Starts docker-registry on a free loopback port, its storage under `work`. */
export async function startRegistry(work: string): Promise<TestRegistry> {
  const host = `127.0.0.1:${await freePort()}`;
  const base = `http://${host}`;
  const storageDir = join(work, 'registry');
  writeFileSync(
    join(work, 'registry.yml'),
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${storageDir}\nhttp:\n  addr: ${host}\n`,
  );
  const registry: ChildProcess = spawn(
    registryBinary ?? 'docker-registry',
    ['serve', join(work, 'registry.yml')],
    {
      stdio: 'ignore',
    },
  );
  const deadlineMs = Date.now() + 20_000;
  for (;;) {
    const up = await fetch(`${base}/v2/`).then(
      (response) => response.ok,
      () => false,
    );
    if (up) break;
    if (Date.now() > deadlineMs) {
      registry.kill('SIGKILL');
      throw new Error(`docker-registry did not answer at ${base} within 20 s`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const pushBlob = async (repository: string, content: Blob): Promise<void> => {
    const started = await fetch(`${base}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
    if (started.status !== 202) throw new Error(`blob upload refused: ${started.status}`);
    const location = new URL(started.headers.get('location') ?? '', base);
    location.searchParams.set('digest', content.digest);
    const put = await fetch(location, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: new Uint8Array(content.bytes),
    });
    if (put.status !== 201) throw new Error(`blob upload failed: ${put.status} ${await put.text()}`);
  };
  return {
    host,
    base,
    storageDir,
    async push(repository, tag, image) {
      for (const content of [...image.layers, image.config]) await pushBlob(repository, content);
      const put = await fetch(`${base}/v2/${repository}/manifests/${tag}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/vnd.docker.distribution.manifest.v2+json' },
        body: new Uint8Array(image.manifest.bytes),
      });
      if (put.status !== 201) throw new Error(`manifest push failed: ${put.status} ${await put.text()}`);
      if (put.headers.get('docker-content-digest') !== image.manifest.digest)
        throw new Error('the registry named another digest for the manifest');
    },
    stop() {
      registry.kill('SIGTERM');
    },
  };
}
