/**
 * A client for the registry HTTP API (the OCI distribution spec, as Docker Hub, docker-registry and the
 * hosted registries serve it), on the global fetch: it resolves a reference to one image manifest for this
 * host's platform and fetches blobs, verifying every byte against its digest.
 *
 * In: a parsed reference, descriptors from the manifest, a path to write a blob to. Out: the verified
 * manifest and config, blobs on disk. It never touches the image store's layout; store.ts owns that.
 *
 * Written here rather than taken from npm: the one maintained client (@snyk/docker-registry-v2-client)
 * speaks only https, verifies no digest, reports no byte progress and takes no AbortSignal, and brings its
 * own HTTP stack (needle); the protocol shoal needs is four GETs and a token request.
 *
 * Auth: anonymous only. A registry that answers 401 with a Bearer challenge (Docker Hub, ghcr.io, quay.io)
 * is asked for a pull token at the realm it names; the token is sent only to that registry (fetch drops the
 * Authorization header on a redirect to another origin, e.g. a CDN) and never logged.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import * as z from 'zod/mini';
import { describeIssues } from '../../cluster/index.ts';
import { errorMessage, isShoalError, mebibyte, ShoalError } from '../../shared/index.ts';
import { whole } from '../../shared/schema.ts';
import { formatImageReference, registryApiHost, type ImageReference } from './reference.ts';

export const mediaTypes = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

/** Every manifest kind shoal reads, best first: a registry answers with one of them. */
const manifestAccept = [
  mediaTypes.ociIndex,
  mediaTypes.dockerManifestList,
  mediaTypes.ociManifest,
  mediaTypes.dockerManifest,
].join(', ');

/** Manifests and indexes larger than this are refused (containerd's limit is the same 4 MiB). */
export const manifestBytesMax = 4 * mebibyte;
/** Image configs larger than this are refused; real ones are a few KiB, with a long history a few hundred. */
export const configBytesMax = 8 * mebibyte;
/** Layers in one manifest; Docker's own limit is 127 (overlayfs), more is a broken or hostile manifest. */
export const layersMax = 512;
/** Entries in one index (platforms and attestations). */
const indexEntriesMax = 4096;

export const requestTimeoutMsDefault = 30_000;
export const blobStallTimeoutMsDefault = 60_000;
/** A token's lifetime when the token service does not say (the spec's default), and the margin kept before its end. */
const tokenLifetimeSecondsDefault = 60;
const tokenRenewMarginMs = 5_000;

const digestPattern = /^sha256:[a-f0-9]{64}$/;

const platformSchema = z.object({
  os: z.string(),
  architecture: z.string(),
  variant: z.optional(z.string()),
});

const descriptorSchema = z.object({
  mediaType: z.optional(z.string()),
  digest: z.string(),
  size: whole(0),
  platform: z.optional(platformSchema),
  urls: z.optional(z.array(z.string())),
});
export type Descriptor = z.infer<typeof descriptorSchema>;
export type Platform = z.infer<typeof platformSchema>;

const imageManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.optional(z.string()),
  config: descriptorSchema,
  layers: z.array(descriptorSchema).check(z.maxLength(layersMax)),
});
export type ImageManifest = z.infer<typeof imageManifestSchema>;

const imageIndexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.optional(z.string()),
  manifests: z.array(descriptorSchema).check(z.maxLength(indexEntriesMax)),
});
export type ImageIndex = z.infer<typeof imageIndexSchema>;

const stringsOrNull = z.optional(z.nullable(z.array(z.string())));
/** The parts of an image's config (the OCI image spec's, Docker's keys) that say how to run it. */
const imageConfigSchema = z.object({
  architecture: z.optional(z.string()),
  os: z.optional(z.string()),
  config: z.optional(
    z.nullable(
      z.object({
        Entrypoint: stringsOrNull,
        Cmd: stringsOrNull,
        Env: stringsOrNull,
        User: z.optional(z.string()),
        WorkingDir: z.optional(z.string()),
      }),
    ),
  ),
  rootfs: z.optional(z.object({ diff_ids: z.optional(z.array(z.string())) })),
});

/** How an image asks to be run: what `docker run IMAGE` would take from it. */
export interface ImageRunConfig {
  /** null: none set (the command alone runs). */
  entrypoint: string[] | null;
  /** null: none set. */
  cmd: string[] | null;
  /** KEY=VALUE, in the image's order. */
  env: string[];
  /** NAME, UID, NAME:GROUP or UID:GID as in the image's /etc/passwd; '' for root. */
  user: string;
  /** Absolute path in the image; '' for /. */
  workingDir: string;
}

export interface ImageConfig {
  run: ImageRunConfig;
  /** sha256 of each layer's uncompressed tar, in order; null when the config lists none. */
  diffIds: string[] | null;
}

/** Parses an image config blob (already verified against its digest). Throws CORRUPT_DATA for one that is not. */
export function parseImageConfig(bytes: Uint8Array, what: string): ImageConfig {
  const parsed = imageConfigSchema.safeParse(parseJson(bytes, what));
  if (!parsed.success) throw corrupt(`${what} is not an image config: ${describeIssues(parsed.error)}`);
  const config = parsed.data.config ?? {};
  return {
    run: {
      entrypoint: config.Entrypoint ?? null,
      cmd: config.Cmd ?? null,
      env: config.Env ?? [],
      user: config.User ?? '',
      workingDir: config.WorkingDir ?? '',
    },
    diffIds: parsed.data.rootfs?.diff_ids ?? null,
  };
}

/** The registry platform names of Node's process.arch values (the Go names the OCI spec uses). */
const architectures: Partial<Record<NodeJS.Architecture, Platform>> = {
  x64: { os: 'linux', architecture: 'amd64' },
  arm64: { os: 'linux', architecture: 'arm64', variant: 'v8' },
  arm: { os: 'linux', architecture: 'arm', variant: 'v7' },
  ia32: { os: 'linux', architecture: '386' },
  ppc64: { os: 'linux', architecture: 'ppc64le' },
  s390x: { os: 'linux', architecture: 's390x' },
  riscv64: { os: 'linux', architecture: 'riscv64' },
  loong64: { os: 'linux', architecture: 'loong64' },
};

/** This host's platform, as registries name it. */
export function hostPlatform(arch: NodeJS.Architecture = process.arch): Platform {
  return architectures[arch] ?? { os: 'linux', architecture: arch };
}

export function formatPlatform(platform: Platform): string {
  return `${platform.os}/${platform.architecture}${platform.variant === undefined ? '' : `/${platform.variant}`}`;
}

/**
 * Picks the manifest for `platform` from an index: same os and architecture, and the same variant when
 * both name one (an entry without a variant fits any; arm64's v8 is its only variant in practice).
 * Attestations (platform unknown/unknown) never match. null when nothing fits.
 */
export function selectManifest(index: ImageIndex, platform: Platform): Descriptor | null {
  const candidates = index.manifests.filter(
    (entry) => entry.platform?.os === platform.os && entry.platform.architecture === platform.architecture,
  );
  const exact = candidates.find((entry) => entry.platform?.variant === platform.variant);
  return exact ?? candidates.find((entry) => entry.platform?.variant === undefined) ?? candidates[0] ?? null;
}

/** The parts of a `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge, or null for another scheme. */
export function parseBearerChallenge(header: string): Record<string, string> | null {
  const match = /^\s*Bearer\s+(.*)$/i.exec(header);
  if (match === null) return null;
  const params: Record<string, string> = {};
  for (const part of (match[1] ?? '').matchAll(/([a-zA-Z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g)) {
    const key = part[1]?.toLowerCase();
    if (key !== undefined) params[key] = (part[2] ?? part[3] ?? '').replace(/\\(.)/g, '$1');
  }
  return params;
}

/**
 * The base URL of a registry's API. Plain http for loopback (a registry on this machine, as in tests and
 * CI) and for the hosts listed as insecure (`host` or `host:port`); https for the rest.
 */
export function registryBaseUrl(registry: string, insecureRegistries: readonly string[] = []): string {
  const host = registryApiHost(registry);
  const hostname = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:[0-9]+$/, '');
  const loopback =
    hostname === 'localhost' || hostname === '[::1]' || /^127(\.[0-9]{1,3}){3}$/.test(hostname);
  const insecure = loopback || insecureRegistries.some((entry) => entry === host || entry === hostname);
  return `${insecure ? 'http' : 'https'}://${host}`;
}

export interface RegistryClientInit {
  /** The fetch to use; injectable so tests can count or fake requests. Default: the global fetch. */
  fetch?: typeof fetch;
  /** Registries (`host` or `host:port`) spoken to over plain http. Loopback always is. */
  insecureRegistries?: readonly string[];
  /** How long a manifest or token request may take, body included. Default 30 s. */
  requestTimeoutMs?: number;
  /** A blob download is abandoned when no byte arrives for this long (its total time has no limit). Default 60 s. */
  blobStallTimeoutMs?: number;
  /** The platform picked from multi-platform images. Default: hostPlatform(). */
  platform?: Platform;
}

export interface ResolvedImage {
  /** The digest of the platform's image manifest: what identifies the image in the store. */
  digest: string;
  manifest: ImageManifest;
  /** The manifest as the registry sent it, hashing to `digest`. */
  manifestBytes: Buffer;
  /** The digest of the index it was picked from, or null for a single-platform image. */
  indexDigest: string | null;
}

export interface BlobDownload {
  signal?: AbortSignal | undefined;
  /** Called with the bytes received so far, after each chunk. */
  onBytes?: ((receivedBytes: number) => void) | undefined;
  /** What the blob is, for messages: "layer 3f2a1b0c9d8e of REF". */
  what: string;
}

interface CachedToken {
  token: string;
  expiresAtMs: number;
}

/** The registry API: resolve a reference to a manifest, fetch blobs. Stateless but for pull tokens. */
export class RegistryClient {
  private readonly fetch: typeof fetch;
  private readonly insecureRegistries: readonly string[];
  private readonly requestTimeoutMs: number;
  private readonly blobStallTimeoutMs: number;
  readonly platform: Platform;
  /** Pull tokens by `registry scope`. */
  private readonly tokens = new Map<string, CachedToken>();

  constructor(init: RegistryClientInit = {}) {
    this.fetch = init.fetch ?? globalThis.fetch;
    this.insecureRegistries = init.insecureRegistries ?? [];
    this.requestTimeoutMs = init.requestTimeoutMs ?? requestTimeoutMsDefault;
    this.blobStallTimeoutMs = init.blobStallTimeoutMs ?? blobStallTimeoutMsDefault;
    this.platform = init.platform ?? hostPlatform();
  }

  /**
   * The digest the registry gives for a tag, from a HEAD request (which Docker Hub does not count against
   * its pull rate limit), or null when it gives none. Lets a pull of a known image skip the manifest GET.
   */
  async headDigest(reference: ImageReference, signal?: AbortSignal): Promise<string | null> {
    const target = reference.digest ?? reference.tag ?? 'latest';
    const response = await this.request(reference, `manifests/${target}`, {
      method: 'HEAD',
      accept: manifestAccept,
      signal: this.timed(signal),
    });
    if (response.status === 405 || response.status === 501) return null; // HEAD not offered: GET will do
    if (!response.ok) throw this.statusError(reference, response, `manifests/${target}`);
    const digest = response.headers.get('docker-content-digest');
    return digest !== null && digestPattern.test(digest) ? digest : null;
  }

  /**
   * Resolves a reference to this platform's image manifest: GETs the manifest, and when it is an index (a
   * multi-platform image), the entry for `platform`. Every manifest fetched by digest is verified against it.
   */
  async resolve(reference: ImageReference, signal?: AbortSignal): Promise<ResolvedImage> {
    const name = formatImageReference(reference);
    const first = await this.getManifest(reference, reference.digest ?? reference.tag ?? 'latest', signal);
    if (reference.digest !== null) checkDigest(`manifest of ${name}`, reference.digest, first.digest);
    if (first.kind === 'manifest') {
      return {
        digest: first.digest,
        manifest: first.manifest,
        manifestBytes: first.bytes,
        indexDigest: null,
      };
    }
    const entry = selectManifest(first.index, this.platform);
    if (entry === null) {
      const offered = first.index.manifests.flatMap((m) => (m.platform ? [formatPlatform(m.platform)] : []));
      throw new ShoalError(
        'NOT_FOUND',
        `image ${name} has no ${formatPlatform(this.platform)} variant (it has ${offered.join(', ') || 'none listed'})`,
      );
    }
    checkDigestAlgorithm(entry.digest, `manifest of ${name}`);
    const chosen = await this.getManifest(reference, entry.digest, signal);
    checkDigest(`${formatPlatform(this.platform)} manifest of ${name}`, entry.digest, chosen.digest);
    if (chosen.kind !== 'manifest')
      throw corrupt(`the index of ${name} points to another index, not an image`);
    return {
      digest: chosen.digest,
      manifest: chosen.manifest,
      manifestBytes: chosen.bytes,
      indexDigest: first.digest,
    };
  }

  /** A small blob (the image config), read whole, verified against its digest. */
  async readBlob(
    reference: ImageReference,
    descriptor: Descriptor,
    what: string,
    signal?: AbortSignal,
  ): Promise<Buffer> {
    checkDigestAlgorithm(descriptor.digest, what);
    if (descriptor.size > configBytesMax)
      throw corrupt(`${what} is ${descriptor.size} bytes, more than ${configBytesMax}`);
    const path = `blobs/${descriptor.digest}`;
    const timed = this.timed(signal);
    const response = await this.request(reference, path, { method: 'GET', signal: timed });
    if (!response.ok) throw this.statusError(reference, response, path);
    const bytes = await readCapped(response, configBytesMax, what).catch((error: unknown) => {
      throw timed.aborted ? this.abortError(timed, reference, path) : error;
    });
    checkBlob(what, descriptor, bytes.length, sha256(bytes));
    return bytes;
  }

  /**
   * Streams a blob into `path` (created; it must not exist), hashing as it goes, and fsyncs it. Rejects
   * with CORRUPT_DATA, naming the blob and both digests, when the bytes are not what the descriptor says;
   * the caller then removes `path`.
   */
  async downloadBlob(
    reference: ImageReference,
    descriptor: Descriptor,
    path: string,
    options: BlobDownload,
  ): Promise<void> {
    checkDigestAlgorithm(descriptor.digest, options.what);
    const stall = new AbortController();
    let stallTimer: NodeJS.Timeout | undefined;
    const armStall = (): void => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => {
        stall.abort(
          new ShoalError(
            'UNAVAILABLE',
            `${options.what}: no data from ${registryBaseUrl(reference.registry, this.insecureRegistries)} for ${this.blobStallTimeoutMs / 1000} s`,
          ),
        );
      }, this.blobStallTimeoutMs);
    };
    const signal = options.signal ? AbortSignal.any([options.signal, stall.signal]) : stall.signal;
    armStall();
    const file = await open(path, 'wx', 0o600);
    try {
      const apiPath = `blobs/${descriptor.digest}`;
      const response = await this.request(reference, apiPath, { method: 'GET', signal });
      if (!response.ok) throw this.statusError(reference, response, apiPath);
      if (response.body === null) throw corrupt(`${options.what}: the registry sent no body`);
      const hash = createHash('sha256');
      let receivedBytes = 0;
      const reader = response.body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read().catch((error: unknown) => {
            throw signal.aborted ? abortReason(signal) : error;
          });
          if (done) break;
          armStall();
          receivedBytes += value.byteLength;
          if (receivedBytes > descriptor.size) {
            throw corrupt(
              `${options.what} refused: larger than the ${descriptor.size} bytes its manifest says`,
            );
          }
          hash.update(value);
          await file.write(value);
          options.onBytes?.(receivedBytes);
        }
      } finally {
        await reader.cancel().catch(() => undefined);
      }
      checkBlob(options.what, descriptor, receivedBytes, `sha256:${hash.digest('hex')}`);
      // A blob is trusted by its name once renamed into the store, so it must be whole on disk first.
      await file.sync();
    } catch (error) {
      throw signal.aborted && !isShoalError(error) ? abortReason(signal) : error;
    } finally {
      clearTimeout(stallTimer);
      await file.close();
    }
  }

  private async getManifest(
    reference: ImageReference,
    target: string,
    signal: AbortSignal | undefined,
  ): Promise<
    | { kind: 'manifest'; manifest: ImageManifest; bytes: Buffer; digest: string }
    | { kind: 'index'; index: ImageIndex; bytes: Buffer; digest: string }
  > {
    const name = formatImageReference(reference);
    const path = `manifests/${target}`;
    const timed = this.timed(signal);
    const response = await this.request(reference, path, {
      method: 'GET',
      accept: manifestAccept,
      signal: timed,
    });
    if (!response.ok) throw this.statusError(reference, response, path);
    const bytes = await readCapped(response, manifestBytesMax, `the manifest of ${name}`).catch(
      (error: unknown) => {
        throw timed.aborted ? this.abortError(timed, reference, path) : error;
      },
    );
    const digest = sha256(bytes);
    const body = parseJson(bytes, `the manifest of ${name}`);
    const declared =
      typeof body === 'object' && body !== null && 'mediaType' in body ? body.mediaType : undefined;
    const mediaType =
      (typeof declared === 'string' ? declared : null) ??
      response.headers.get('content-type')?.split(';')[0]?.trim();
    const isIndex =
      mediaType === mediaTypes.ociIndex ||
      mediaType === mediaTypes.dockerManifestList ||
      (typeof body === 'object' && body !== null && 'manifests' in body && !('layers' in body));
    if (typeof body === 'object' && body !== null && 'schemaVersion' in body && body.schemaVersion === 1) {
      throw new ShoalError(
        'INVALID_ARGUMENT',
        `image ${name} uses the old manifest schema 1, which shoal does not pull; push it again with a current tool`,
      );
    }
    if (isIndex) {
      const parsed = imageIndexSchema.safeParse(body);
      if (!parsed.success)
        throw corrupt(`the index of ${name} is malformed: ${describeIssues(parsed.error)}`);
      return { kind: 'index', index: parsed.data, bytes, digest };
    }
    const parsed = imageManifestSchema.safeParse(body);
    if (!parsed.success)
      throw corrupt(`the manifest of ${name} is malformed: ${describeIssues(parsed.error)}`);
    checkImageManifest(parsed.data, name);
    return { kind: 'manifest', manifest: parsed.data, bytes, digest };
  }

  /** A request to the repository's API path, with a pull token when the registry asks for one. */
  private async request(
    reference: ImageReference,
    path: string,
    init: { method: 'GET' | 'HEAD'; accept?: string; signal: AbortSignal },
  ): Promise<Response> {
    const base = registryBaseUrl(reference.registry, this.insecureRegistries);
    const url = `${base}/v2/${reference.repository}/${path}`;
    const headers: Record<string, string> = {};
    if (init.accept !== undefined) headers['accept'] = init.accept;
    const cached = this.cachedToken(reference.registry, pullScope(reference));
    if (cached !== null) headers['authorization'] = `Bearer ${cached}`;
    let response = await this.send(
      url,
      { method: init.method, headers, signal: init.signal },
      reference,
      path,
    );
    if (response.status !== 401) return response;
    const challenge = parseBearerChallenge(response.headers.get('www-authenticate') ?? '');
    await response.body?.cancel();
    if (challenge?.['realm'] === undefined) {
      throw new ShoalError(
        'UNAUTHENTICATED',
        `registry ${reference.registry} asks for credentials to pull ${formatImageReference(reference)}; shoal pulls anonymously only`,
      );
    }
    const scope = pullScope(reference);
    const token = await this.fetchToken(reference, challenge, scope, init.signal);
    headers['authorization'] = `Bearer ${token}`;
    response = await this.send(url, { method: init.method, headers, signal: init.signal }, reference, path);
    return response;
  }

  private cachedToken(registry: string, scope: string): string | null {
    const key = `${registry} ${scope}`;
    const cached = this.tokens.get(key);
    if (cached === undefined) return null;
    if (Date.now() < cached.expiresAtMs) return cached.token;
    this.tokens.delete(key);
    return null;
  }

  private async fetchToken(
    reference: ImageReference,
    challenge: Record<string, string>,
    scope: string,
    signal: AbortSignal,
  ): Promise<string> {
    const realm = challenge['realm'] ?? '';
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new ShoalError(
        'UNAVAILABLE',
        `registry ${reference.registry} named a bad token realm ${JSON.stringify(realm)}`,
      );
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new ShoalError(
        'UNAVAILABLE',
        `registry ${reference.registry} named a token realm that is not http(s): ${realm}`,
      );
    }
    if (challenge['service'] !== undefined) url.searchParams.set('service', challenge['service']);
    url.searchParams.set('scope', scope);
    const what = `token service ${url.origin}${url.pathname}`;
    const response = await this.send(url.toString(), { method: 'GET', headers: {}, signal }, reference, what);
    if (!response.ok) {
      await response.body?.cancel();
      throw new ShoalError(
        'UNAVAILABLE',
        `${what} answered ${response.status} for ${formatImageReference(reference)}`,
      );
    }
    const body = parseJson(await readCapped(response, 64 * 1024, what), what);
    const parsed = tokenSchema.safeParse(body);
    const token = parsed.success ? (parsed.data.token ?? parsed.data.access_token) : undefined;
    if (token === undefined || token === '') throw new ShoalError('UNAVAILABLE', `${what} sent no token`);
    const lifetimeSeconds =
      (parsed.success ? parsed.data.expires_in : undefined) ?? tokenLifetimeSecondsDefault;
    this.tokens.set(`${reference.registry} ${scope}`, {
      token,
      expiresAtMs: Date.now() + lifetimeSeconds * 1000 - tokenRenewMarginMs,
    });
    return token;
  }

  /** fetch, with its failures turned into UNAVAILABLE naming the URL (never a token: those go in headers). */
  private async send(
    url: string,
    init: { method: string; headers: Record<string, string>; signal: AbortSignal },
    reference: ImageReference,
    what: string,
  ): Promise<Response> {
    try {
      return await this.fetch(url, {
        method: init.method,
        headers: init.headers,
        signal: init.signal,
        redirect: 'follow',
      });
    } catch (error) {
      if (init.signal.aborted) throw this.abortError(init.signal, reference, what);
      const cause =
        error instanceof Error && error.cause !== undefined ? `: ${errorMessage(error.cause)}` : '';
      throw new ShoalError(
        'UNAVAILABLE',
        `registry unreachable at ${redact(url)}: ${errorMessage(error)}${cause}`,
        {
          cause: error,
        },
      );
    }
  }

  /** The caller's signal with the request timeout added. */
  private timed(signal: AbortSignal | undefined): AbortSignal {
    const timeout = AbortSignal.timeout(this.requestTimeoutMs);
    return signal ? AbortSignal.any([signal, timeout]) : timeout;
  }

  /** The caller's own abort passes through as is; a timeout becomes UNAVAILABLE naming what did not answer. */
  private abortError(signal: AbortSignal, reference: ImageReference, what: string): unknown {
    const reason: unknown = signal.reason;
    if (reason instanceof DOMException && reason.name === 'TimeoutError') {
      const base = registryBaseUrl(reference.registry, this.insecureRegistries);
      return new ShoalError(
        'UNAVAILABLE',
        `registry ${base} did not answer ${what} within ${this.requestTimeoutMs / 1000} s`,
      );
    }
    return reason;
  }

  private statusError(reference: ImageReference, response: Response, path: string): ShoalError {
    void response.body?.cancel();
    const name = formatImageReference(reference);
    const base = registryBaseUrl(reference.registry, this.insecureRegistries);
    const status = response.status;
    if (status === 404) {
      return path.startsWith('manifests/')
        ? new ShoalError('NOT_FOUND', `image ${name} not found in ${reference.registry}`)
        : new ShoalError(
            'NOT_FOUND',
            `image ${name}: ${reference.registry} has lost ${path.slice('blobs/'.length)}`,
          );
    }
    // Docker Hub answers 401 even with a token for a repository that does not exist (or is private).
    if (status === 401 || status === 403) {
      return new ShoalError(
        'NOT_FOUND',
        `image ${name} not found in ${reference.registry} (or it is private: shoal pulls without credentials)`,
      );
    }
    if (status === 429) {
      return new ShoalError(
        'UNAVAILABLE',
        `registry ${reference.registry} refused ${name}: too many requests; retry later`,
      );
    }
    return new ShoalError(
      'UNAVAILABLE',
      `registry ${base} answered ${status} to GET /v2/${reference.repository}/${path}`,
    );
  }
}

const tokenSchema = z.object({
  token: z.optional(z.string()),
  access_token: z.optional(z.string()),
  expires_in: z.optional(z.number().check(z.positive())),
});

function pullScope(reference: ImageReference): string {
  return `repository:${reference.repository}:pull`;
}

/** A URL fit for a message: no query (a redirect's may carry a signature) and no user info. */
function redact(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.origin}${parsed.pathname}`;
  } catch {
    return '(a bad URL)';
  }
}

/** Refuses manifests shoal cannot run: not a container image, foreign (Windows) layers, unknown compression. */
function checkImageManifest(manifest: ImageManifest, name: string): void {
  const configType = manifest.config.mediaType;
  if (
    configType !== undefined &&
    configType !== mediaTypes.dockerConfig &&
    configType !== mediaTypes.ociConfig
  ) {
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `${name} is not a container image (its config is ${configType})`,
    );
  }
  checkDigestAlgorithm(manifest.config.digest, `the config of ${name}`);
  for (const layer of manifest.layers) {
    checkDigestAlgorithm(layer.digest, `a layer of ${name}`);
    const type = layer.mediaType ?? '';
    if (
      type === mediaTypes.dockerForeignLayer ||
      type.includes('nondistributable') ||
      layer.urls !== undefined
    ) {
      throw new ShoalError(
        'INVALID_ARGUMENT',
        `${name} has a foreign layer (${type}), which shoal does not fetch`,
      );
    }
    const known =
      type === mediaTypes.dockerLayer ||
      /^application\/vnd\.oci\.image\.layer\.v1\.tar(\+gzip|\+zstd)?$/.test(type) ||
      type === '';
    if (!known)
      throw new ShoalError('INVALID_ARGUMENT', `${name} is not a container image (a layer is ${type})`);
  }
}

function checkDigestAlgorithm(digest: string, what: string): void {
  if (digestPattern.test(digest)) return;
  throw new ShoalError(
    'INVALID_ARGUMENT',
    `${what} has digest ${digest.slice(0, 80)}; shoal verifies sha256 digests only`,
  );
}

function checkDigest(what: string, expected: string, actual: string): void {
  if (expected !== actual) throw corrupt(`${what} refused: expected ${expected}, got ${actual}`);
}

function checkBlob(what: string, descriptor: Descriptor, sizeBytes: number, digest: string): void {
  if (digest !== descriptor.digest)
    throw corrupt(`${what} refused: expected ${descriptor.digest}, got ${digest}`);
  if (sizeBytes !== descriptor.size) {
    throw corrupt(`${what} refused: ${sizeBytes} bytes where its manifest says ${descriptor.size}`);
  }
}

function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

function corrupt(message: string): ShoalError {
  return new ShoalError('CORRUPT_DATA', message);
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason;
}

function parseJson(bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (error) {
    throw corrupt(`${what} is not JSON: ${errorMessage(error)}`);
  }
}

/** A response body, refused past bytesMax (by its Content-Length when it has one, else as it arrives). */
async function readCapped(response: Response, bytesMax: number, what: string): Promise<Buffer> {
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (declared > bytesMax) {
    await response.body?.cancel();
    throw corrupt(`${what} is ${declared} bytes, more than the ${bytesMax} shoal reads`);
  }
  if (response.body === null) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > bytesMax) {
      await reader.cancel();
      throw corrupt(`${what} is more than the ${bytesMax} bytes shoal reads`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}
