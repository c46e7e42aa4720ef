import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isShoalError } from '../../shared/index.ts';
import { parseImageReference } from './reference.ts';
import {
  hostPlatform,
  mediaTypes,
  parseBearerChallenge,
  parseImageConfig,
  registryBaseUrl,
  RegistryClient,
  selectManifest,
  type Descriptor,
  type ImageIndex,
} from './registry.ts';

const urlOf = (input: string | URL | Request): string =>
  input instanceof Request ? input.url : input.toString();
const sha = (bytes: string | Uint8Array): string =>
  `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
const entry = (n: number, platform?: Descriptor['platform']): Descriptor => ({
  mediaType: mediaTypes.ociManifest,
  digest: `sha256:${String(n).repeat(64).slice(0, 64)}`,
  size: 100,
  ...(platform ? { platform } : {}),
});

describe('selectManifest', () => {
  const index: ImageIndex = {
    schemaVersion: 2,
    manifests: [
      entry(1, { os: 'linux', architecture: 'arm', variant: 'v6' }),
      entry(2, { os: 'linux', architecture: 'arm', variant: 'v7' }),
      entry(3, { os: 'linux', architecture: 'amd64' }),
      entry(4, { os: 'linux', architecture: 'arm64' }),
      entry(5, { os: 'unknown', architecture: 'unknown' }),
      entry(6, { os: 'windows', architecture: 'amd64' }),
    ],
  };
  it.each([
    [{ os: 'linux', architecture: 'amd64' }, 3],
    [{ os: 'linux', architecture: 'arm', variant: 'v7' }, 2],
    [{ os: 'linux', architecture: 'arm64', variant: 'v8' }, 4],
    [{ os: 'linux', architecture: 's390x' }, null],
  ])('%j picks entry %s', (platform, expected) => {
    const chosen = selectManifest(index, platform);
    expect(chosen === null ? null : index.manifests.indexOf(chosen) + 1).toBe(expected);
  });

  it('maps process.arch to registry names', () => {
    expect(hostPlatform('x64')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(hostPlatform('arm64')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
  });
});

describe('protocol details', () => {
  it('parses Bearer challenges and ignores other schemes', () => {
    expect(
      parseBearerChallenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"',
      ),
    ).toEqual({
      realm: 'https://auth.docker.io/token',
      service: 'registry.docker.io',
      scope: 'repository:library/busybox:pull',
    });
    expect(parseBearerChallenge('Basic realm="x"')).toBeNull();
  });

  it('speaks http to loopback and listed registries, https elsewhere', () => {
    expect(registryBaseUrl('docker.io')).toBe('https://registry-1.docker.io');
    expect(registryBaseUrl('127.0.0.1:5000')).toBe('http://127.0.0.1:5000');
    expect(registryBaseUrl('127.9.8.7')).toBe('http://127.9.8.7');
    expect(registryBaseUrl('localhost:5000')).toBe('http://localhost:5000');
    expect(registryBaseUrl('[::1]:5000')).toBe('http://[::1]:5000');
    expect(registryBaseUrl('registry.lan:5000')).toBe('https://registry.lan:5000');
    expect(registryBaseUrl('registry.lan:5000', ['registry.lan'])).toBe('http://registry.lan:5000');
    expect(registryBaseUrl('registry.lan:5000', ['registry.lan:5000'])).toBe('http://registry.lan:5000');
    expect(registryBaseUrl('127.example.com')).toBe('https://127.example.com');
  });

  it('reads the run config, with defaults for an image that sets nothing', () => {
    const config = parseImageConfig(
      Buffer.from(JSON.stringify({ config: { Entrypoint: ['/a'], Cmd: null, Env: ['A=1'], User: '1000' } })),
      'config',
    );
    expect(config.run).toEqual({ entrypoint: ['/a'], cmd: null, env: ['A=1'], user: '1000', workingDir: '' });
    expect(parseImageConfig(Buffer.from('{}'), 'config').run).toEqual({
      entrypoint: null,
      cmd: null,
      env: [],
      user: '',
      workingDir: '',
    });
    expect(() => parseImageConfig(Buffer.from('{"config":{"Env":"x"}}'), 'config')).toThrow(
      /not an image config/,
    );
  });
});

describe('RegistryClient with a fake registry', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  const layer = Buffer.from('layer bytes');
  const config = Buffer.from('{}');
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: mediaTypes.dockerManifest,
      config: { mediaType: mediaTypes.dockerConfig, digest: sha(config), size: config.length },
      layers: [{ mediaType: mediaTypes.dockerLayer, digest: sha(layer), size: layer.length }],
    }),
  );
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: mediaTypes.ociIndex,
      manifests: [
        {
          mediaType: mediaTypes.dockerManifest,
          digest: sha(manifest),
          size: manifest.length,
          platform: { os: 'linux', architecture: 'amd64' },
        },
      ],
    }),
  );

  /** A registry that wants a Bearer token, serves the index for tag "multi", and `blob` for the layer. */
  function fakeRegistry(blob: Buffer): { fetch: typeof fetch; requests: string[] } {
    const requests: string[] = [];
    const fake = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
      const url = urlOf(input);
      const auth = new Headers(init?.headers).get('authorization');
      requests.push(`${init?.method ?? 'GET'} ${url}${auth === null ? '' : ' (token)'}`);
      if (url.startsWith('https://auth.example/token')) {
        return Promise.resolve(Response.json({ token: 'secret-token', expires_in: 300 }));
      }
      if (auth !== 'Bearer secret-token') {
        return Promise.resolve(
          new Response(null, {
            status: 401,
            headers: { 'www-authenticate': 'Bearer realm="https://auth.example/token",service="reg"' },
          }),
        );
      }
      const path = new URL(url).pathname;
      if (path === '/v2/team/app/manifests/multi') return Promise.resolve(new Response(index));
      if (path === `/v2/team/app/manifests/${sha(manifest)}`) return Promise.resolve(new Response(manifest));
      if (path === `/v2/team/app/blobs/${sha(layer)}`)
        return Promise.resolve(new Response(new Uint8Array(blob)));
      return Promise.resolve(new Response('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', { status: 404 }));
    };
    return { fetch: fake, requests };
  }

  const platform = { os: 'linux', architecture: 'amd64' };

  it('gets a token, picks the platform from an index, and verifies what it downloads', async () => {
    const registry = fakeRegistry(layer);
    const client = new RegistryClient({ fetch: registry.fetch, platform });
    const resolved = await client.resolve(parseImageReference('registry.example/team/app:multi'));
    expect(resolved.digest).toBe(sha(manifest));
    expect(resolved.indexDigest).toBe(sha(index));
    expect(registry.requests.filter((line) => line.includes('auth.example'))).toHaveLength(1); // token cached
    expect(registry.requests[0]).toBe('GET https://registry.example/v2/team/app/manifests/multi');

    const dir = mkdtempSync(join(tmpdir(), 'shoal-registry-test-'));
    dirs.push(dir);
    const layerDescriptor = resolved.manifest.layers[0];
    if (layerDescriptor === undefined) throw new Error('no layer');
    let lastBytes = 0;
    await client.downloadBlob(
      parseImageReference('registry.example/team/app:multi'),
      layerDescriptor,
      join(dir, 'ok'),
      {
        what: 'layer x',
        onBytes: (bytes) => (lastBytes = bytes),
      },
    );
    expect(readFileSync(join(dir, 'ok'))).toEqual(layer);
    expect(lastBytes).toBe(layer.length);
  });

  it('refuses a blob whose bytes do not match its digest, naming both digests', async () => {
    const forged = Buffer.from('LAYER BYTES');
    const client = new RegistryClient({ fetch: fakeRegistry(forged).fetch, platform });
    const reference = parseImageReference('registry.example/team/app:multi');
    const dir = mkdtempSync(join(tmpdir(), 'shoal-registry-test-'));
    dirs.push(dir);
    const descriptor = { mediaType: mediaTypes.dockerLayer, digest: sha(layer), size: layer.length };
    const error = await client
      .downloadBlob(reference, descriptor, join(dir, 'bad'), { what: 'layer 0123456789ab of x' })
      .then(
        () => null,
        (caught: unknown) => caught,
      );
    expect(isShoalError(error, 'CORRUPT_DATA')).toBe(true);
    expect((error as Error).message).toBe(
      `layer 0123456789ab of x refused: expected ${sha(layer)}, got ${sha(forged)}`,
    );
  });

  it('says which image is missing, and which URL does not answer', async () => {
    const client = new RegistryClient({ fetch: fakeRegistry(layer).fetch, platform });
    await expect(client.resolve(parseImageReference('registry.example/team/app:nope'))).rejects.toThrow(
      'image registry.example/team/app:nope not found in registry.example',
    );
    const refused = new RegistryClient({
      fetch: () =>
        Promise.reject(new TypeError('fetch failed', { cause: new Error('connect ECONNREFUSED') })),
    });
    const error = await refused.resolve(parseImageReference('127.0.0.1:1/app')).then(
      () => null,
      (caught: unknown) => caught,
    );
    expect(isShoalError(error, 'UNAVAILABLE')).toBe(true);
    expect((error as Error).message).toBe(
      'registry unreachable at http://127.0.0.1:1/v2/app/manifests/latest: fetch failed: connect ECONNREFUSED',
    );
  });

  it('refuses a manifest pulled by digest that does not hash to it', async () => {
    const client = new RegistryClient({ fetch: fakeRegistry(layer).fetch, platform });
    const wrong = `sha256:${'0'.repeat(64)}`;
    const registry = fakeRegistry(layer);
    const lying = (async (input: string | URL | Request, init?: RequestInit) =>
      urlOf(input).endsWith(wrong) ? new Response(manifest) : registry.fetch(input, init)) as typeof fetch;
    await expect(client.resolve(parseImageReference(`registry.example/team/app@${wrong}`))).rejects.toThrow(
      /not found/,
    );
    const liar = new RegistryClient({ fetch: lying, platform });
    await expect(liar.resolve(parseImageReference(`registry.example/team/app@${wrong}`))).rejects.toThrow(
      `manifest of registry.example/team/app@${wrong} refused: expected ${wrong}, got ${sha(manifest)}`,
    );
  });
});
