/**
 * The agent's image store: images pulled from registries without an engine, each unpacked once per manifest
 * digest into a root filesystem that tasks run in, and removed once no task has used it for a day.
 *
 * On disk, under `dir` (one store per directory, one process at a time):
 *   blobs/sha256/HEX          manifests, configs and layers, each verified against its digest before it is
 *                             renamed here, so a blob's name is proof of its content
 *   rootfs/HEX/               the flattened root filesystem of the image whose manifest digest is sha256:HEX
 *   images/HEX.json           its record: refs, digest, run config, sizes, lastUsedMs and users (task ids)
 *   tmp/                      downloads and unpacks in progress; emptied when the store opens
 * A root filesystem is built in tmp/ and renamed into rootfs/ whole, then its record written: a crash leaves
 * a half image only in tmp/, or a rootfs without a record, and the store removes both when it opens.
 *
 * Pulls of one reference, of one manifest digest and of one blob are each shared: the second caller waits
 * for the first's work, gets its progress lines, and the work is cancelled only when every caller has
 * given up. A pull by tag asks the registry which digest the tag names (HEAD, which Docker Hub does not
 * count against its rate limit) and downloads nothing when that image is stored; a pull by digest of a
 * stored image asks nothing. When the registry is unreachable, a reference pulled before is served from the
 * store, with a line that says so.
 *
 * Garbage: collect(nowMs) removes images with no users whose lastUsedMs is older than unusedForMs, then
 * every blob no remaining image references and no pull in progress needs. Time enters as nowMs.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, chmod, open } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import * as z from 'zod/mini';
import { describeIssues } from '../../cluster/index.ts';
import {
  assert,
  errorMessage,
  isShoalError,
  ShoalError,
  writeFileAtomic,
  type Logger,
} from '../../shared/index.ts';
import { whole } from '../../shared/schema.ts';
import { Semaphore } from '../../shared/semaphore.ts';
import { formatImageReference, parseImageReference, type ImageReference } from './reference.ts';
import {
  parseImageConfig,
  RegistryClient,
  type Descriptor,
  type ImageRunConfig,
  type Platform,
  type ResolvedImage,
} from './registry.ts';
import { RootfsBuilder } from './unpack.ts';

/** An image no task has used for this long is removed by collect(). A day, as the issue asks. */
export const imageUnusedMsDefault = 24 * 60 * 60_000;
/** Layers of one image downloaded at once (Docker's default, max-concurrent-downloads, is 3). */
export const layerDownloadsMaxDefault = 3;
/** A layer's "Downloading" line is sent at most this often; other status changes always. */
export const pullProgressIntervalMs = 1000;
/** References remembered per image (the most recent); only used to serve a pull while the registry is down. */
const refsPerImageMax = 16;

const digestPattern = /^sha256:[a-f0-9]{64}$/;
const digestSchema = z.string().check(z.regex(digestPattern));

const imageRecordSchema = z.object({
  version: z.literal(1),
  digest: digestSchema,
  /** Canonical references this image was pulled as, most recent last. */
  refs: z.array(z.string()),
  /** Digests of indexes (multi-platform images) this image was picked from: a pull by one is served from here. */
  indexDigests: z.array(digestSchema),
  config: z.object({
    entrypoint: z.nullable(z.array(z.string())),
    cmd: z.nullable(z.array(z.string())),
    env: z.array(z.string()),
    user: z.string(),
    workingDir: z.string(),
  }),
  /** Every blob the image holds: its manifest, config and layers. */
  blobs: z.array(digestSchema),
  downloadBytes: whole(0),
  rootfsBytes: whole(0),
  pulledAtMs: whole(0),
  lastUsedMs: whole(0),
  users: z.array(z.string()),
});
type ImageRecord = z.infer<typeof imageRecordSchema>;

export interface ImageStoreInit {
  /** The store's directory (created, mode 0700), e.g. DATA_DIR/images. */
  dir: string;
  /** Used as given: pass one named for the store, e.g. logger.child('images'). */
  logger: Logger;
  /** Registries (`host` or `host:port`) spoken to over plain http. Loopback always is. */
  insecureRegistries?: readonly string[];
  /** Injectable for tests (counting or faking requests). Default: the global fetch. */
  fetch?: typeof fetch;
  /** The clock for lastUsedMs and pulledAtMs. Default Date.now. */
  nowMs?: () => number;
  /** The platform picked from multi-platform images. Default: this host's. */
  platform?: Platform;
  /** How long a manifest or token request may take. Default 30 s. */
  requestTimeoutMs?: number;
  /** A layer download is abandoned after this long without a byte. Default 60 s. */
  blobStallTimeoutMs?: number;
  /** Layers of one image downloaded at once. Default 3. */
  layerDownloadsMax?: number;
  /** Give files the tar's owners. Default: whether this process is root (only root may). */
  preserveOwnership?: boolean;
}

export interface StoredImage {
  /** The reference pulled, canonical: `registry/repository[:tag][@digest]`. */
  ref: string;
  /** The image manifest's digest, which names it in the store (acquire, release). */
  digest: string;
  /** The root filesystem's absolute path. Shared by every task of the image: mount it read-only or under an overlay. */
  rootfs: string;
  config: ImageRunConfig;
  /** Bytes of regular files in the root filesystem. */
  sizeBytes: number;
}

export interface PullOptions {
  /** Progress as Docker shows it: "pulling image REF", "3f2a1b0c9d8e: Downloading 1.2 MB / 2.0 MB", … */
  onProgress?: (line: string) => void;
  signal?: AbortSignal;
}

export interface CollectReport {
  /** Manifest digests of the images removed. */
  images: string[];
  /** Digests of the blobs removed. */
  blobs: string[];
}

type Emit = (line: string) => void;

export class ImageStore {
  private readonly dir: string;
  private readonly logger: Logger;
  private readonly client: RegistryClient;
  private readonly nowMs: () => number;
  private readonly layerDownloadsMax: number;
  private readonly preserveOwnership: boolean | undefined;
  private readonly records = new Map<string, ImageRecord>();
  private readonly pulls = new SharedWorks<StoredImage>();
  private readonly downloads = new SharedWorks<ImageRecord>();
  private readonly blobFetches = new SharedWorks<string>();
  /** Blobs pulls in progress need, with how many need each: collect() leaves them. */
  private readonly pinned = new Map<string, number>();
  private opened: Promise<void> | null = null;
  /** Serializes changes to records (and collect's decisions), so a record is never written from stale data. */
  private recordLock: Promise<void> = Promise.resolve();

  constructor(init: ImageStoreInit) {
    this.dir = resolve(init.dir);
    this.logger = init.logger;
    this.nowMs = init.nowMs ?? Date.now;
    this.layerDownloadsMax = init.layerDownloadsMax ?? layerDownloadsMaxDefault;
    assert(this.layerDownloadsMax >= 1, 'layerDownloadsMax is at least 1');
    this.preserveOwnership = init.preserveOwnership;
    this.client = new RegistryClient({
      ...(init.fetch ? { fetch: init.fetch } : {}),
      ...(init.insecureRegistries ? { insecureRegistries: init.insecureRegistries } : {}),
      ...(init.platform ? { platform: init.platform } : {}),
      ...(init.requestTimeoutMs !== undefined ? { requestTimeoutMs: init.requestTimeoutMs } : {}),
      ...(init.blobStallTimeoutMs !== undefined ? { blobStallTimeoutMs: init.blobStallTimeoutMs } : {}),
    });
  }

  /**
   * Makes `ref` available: from the store when it holds the image, else from its registry. Rejects with
   * INVALID_ARGUMENT (bad reference, not an image), NOT_FOUND (no such image or tag, or no variant for
   * this platform), UNAVAILABLE (registry unreachable), CORRUPT_DATA (a digest mismatch, a bad layer), or
   * the signal's reason.
   */
  async pull(ref: string, options: PullOptions = {}): Promise<StoredImage> {
    await this.open();
    const reference = parseImageReference(ref);
    const name = formatImageReference(reference);
    const emit = options.onProgress ?? (() => undefined);
    if (reference.digest !== null) {
      const stored = await this.touch(reference.digest, name);
      if (stored !== null) {
        emit(`using stored image ${name}`);
        return this.storedImage(stored, name);
      }
    }
    return this.pulls.run(name, options.signal, emit, (signal, shared) =>
      this.pullFromRegistry(reference, name, signal, shared),
    );
  }

  /** Records that task `taskId` uses the image: collect() keeps it until released. NOT_FOUND for an image not stored. */
  async acquire(digest: string, taskId: string): Promise<void> {
    await this.open();
    await this.withRecords(() => {
      const record = this.byDigest(digest);
      if (record === null)
        throw new ShoalError('NOT_FOUND', `image ${digest} is not in the image store; pull it first`);
      if (!record.users.includes(taskId)) record.users.push(taskId);
      record.lastUsedMs = this.nowMs();
      this.writeRecord(record);
    });
  }

  /** The task no longer uses the image; its unused time starts now. Releasing twice, or an unknown image, is no error. */
  async release(digest: string, taskId: string): Promise<void> {
    await this.open();
    await this.withRecords(() => {
      const record = this.byDigest(digest);
      if (record === null || !record.users.includes(taskId)) return;
      record.users = record.users.filter((user) => user !== taskId);
      record.lastUsedMs = this.nowMs();
      this.writeRecord(record);
    });
  }

  /**
   * Releases every user not in `liveTaskIds`: for an agent that restarted and lost track of tasks that ended
   * meanwhile. Returns how many were released.
   */
  async releaseAllBut(liveTaskIds: ReadonlySet<string>): Promise<number> {
    await this.open();
    return this.withRecords(() => {
      let released = 0;
      for (const record of this.records.values()) {
        const kept = record.users.filter((user) => liveTaskIds.has(user));
        if (kept.length === record.users.length) continue;
        released += record.users.length - kept.length;
        record.users = kept;
        record.lastUsedMs = this.nowMs();
        this.writeRecord(record);
      }
      return released;
    });
  }

  /** The stored images, for listings. */
  async list(): Promise<(StoredImage & { refs: string[]; users: string[]; lastUsedMs: number })[]> {
    await this.open();
    return [...this.records.values()].map((record) => ({
      ...this.storedImage(record, record.refs.at(-1) ?? record.digest),
      refs: [...record.refs],
      users: [...record.users],
      lastUsedMs: record.lastUsedMs,
    }));
  }

  /**
   * Removes images no task uses that were last used unusedForMs or more before nowMs, then the blobs no
   * remaining image references (and no pull in progress needs). Returns what it removed.
   */
  async collect(nowMs: number, unusedForMs: number = imageUnusedMsDefault): Promise<CollectReport> {
    await this.open();
    const doomed: string[] = [];
    const report = await this.withRecords(async () => {
      const images: string[] = [];
      for (const record of [...this.records.values()]) {
        if (record.users.length > 0 || nowMs - record.lastUsedMs < unusedForMs) continue;
        const hex = hexOf(record.digest);
        // The record goes first: a crash after it leaves a rootfs without a record, which open() removes.
        await rm(this.recordPath(hex), { force: true });
        this.records.delete(record.digest);
        const trash = join(this.dir, 'tmp', `trash-${hex}-${randomBytes(4).toString('hex')}`);
        await rename(this.rootfsPath(hex), trash).catch(() => undefined);
        doomed.push(trash);
        images.push(record.digest);
      }
      const referenced = new Set([...this.records.values()].flatMap((record) => record.blobs));
      const blobs: string[] = [];
      for (const hex of await readdir(join(this.dir, 'blobs', 'sha256'))) {
        const digest = `sha256:${hex}`;
        if (referenced.has(digest) || this.pinned.has(digest)) continue;
        await rm(this.blobPath(digest), { force: true });
        blobs.push(digest);
      }
      return { images, blobs };
    });
    for (const path of doomed) await removeTree(path);
    if (report.images.length > 0 || report.blobs.length > 0) {
      this.logger.info('collected unused images', {
        images: report.images.length,
        blobs: report.blobs.length,
      });
    }
    return report;
  }

  private async pullFromRegistry(
    reference: ImageReference,
    name: string,
    signal: AbortSignal,
    emit: Emit,
  ): Promise<StoredImage> {
    emit(`pulling image ${name}`);
    const startedMs = performance.now();
    let named: string | null;
    let resolved: ResolvedImage | null = null;
    try {
      // The HEAD is only worth a request when something is stored that the tag might name.
      named =
        reference.digest ??
        (this.records.size === 0 ? null : await this.client.headDigest(reference, signal));
      if (named === null || this.byDigest(named) === null) {
        resolved = await this.client.resolve(reference, signal);
        named = resolved.indexDigest ?? resolved.digest;
      }
    } catch (error) {
      const known = isShoalError(error, 'UNAVAILABLE') ? this.byRef(name) : null;
      const stored = known === null ? null : await this.touch(known.digest, name);
      if (stored === null) throw error;
      this.logger.warn('registry unreachable, using the stored image', {
        image: name,
        error: errorMessage(error),
      });
      emit(`${errorMessage(error)}; using the stored image ${name} (digest ${stored.digest})`);
      return this.storedImage(stored, name);
    }
    const stored = await this.touch(resolved?.digest ?? named, name, named);
    if (stored !== null) {
      emit(`image ${name} is up to date (digest ${stored.digest})`);
      return this.storedImage(stored, name);
    }
    // A HEAD named a digest whose image is gone by now (collected meanwhile): resolve after all.
    const image = resolved ?? (await this.client.resolve(reference, signal));
    const downloaded = await this.downloads.run(image.digest, signal, emit, (shared, sharedEmit) =>
      this.download(reference, name, image, shared, sharedEmit),
    );
    const record = (await this.touch(downloaded.digest, name, image.indexDigest)) ?? downloaded;
    const seconds = ((performance.now() - startedMs) / 1000).toFixed(1);
    this.logger.info('pulled image', { image: name, digest: record.digest, seconds });
    emit(`pulled image ${name} (digest ${record.digest}) in ${seconds} s`);
    return this.storedImage(record, name);
  }

  /** Downloads and unpacks an image not yet stored, and writes its record. */
  private async download(
    reference: ImageReference,
    name: string,
    resolved: ResolvedImage,
    signal: AbortSignal,
    emit: Emit,
  ): Promise<ImageRecord> {
    const manifest = resolved.manifest;
    const blobs = [resolved.digest, manifest.config.digest, ...manifest.layers.map((layer) => layer.digest)];
    // Stops the other layers' downloads when one fails.
    const failed = new AbortController();
    const linked = AbortSignal.any([signal, failed.signal]);
    const rootfs = this.rootfsPath(hexOf(resolved.digest));
    let building: string | null = null;
    let renamed = false;
    const layerPaths: Promise<string>[] = [];
    this.pin(blobs);
    try {
      building = await mkdtemp(join(this.dir, 'tmp', 'rootfs-'));
      await this.storeVerifiedBytes(resolved.digest, resolved.manifestBytes);
      const configBytes = await this.configBlob(reference, manifest.config, `the config of ${name}`, linked);
      const config = parseImageConfig(configBytes, `the config of ${name}`);
      if (config.diffIds !== null && config.diffIds.length !== manifest.layers.length) {
        throw new ShoalError(
          'CORRUPT_DATA',
          `image ${name} refused: its config lists ${config.diffIds.length} layers, its manifest ${manifest.layers.length}`,
        );
      }
      const slots = new Semaphore(this.layerDownloadsMax);
      for (const layer of manifest.layers) {
        const path = slots.run(() =>
          this.layerBlob(reference, layer, `layer ${shortId(layer.digest)} of ${name}`, linked, emit),
        );
        path.catch(() => undefined); // awaited in order below; a failure is handled there
        layerPaths.push(path);
      }
      const builder = new RootfsBuilder({
        root: building,
        ...(this.preserveOwnership !== undefined ? { preserveOwnership: this.preserveOwnership } : {}),
        onNote: (line) => {
          this.logger.info(line);
          emit(line);
        },
      });
      let rootfsBytes = 0;
      for (const [index, layer] of manifest.layers.entries()) {
        const pending = layerPaths[index];
        assert(pending !== undefined, 'a download for every layer');
        const path = await pending;
        const id = shortId(layer.digest);
        emit(`${id}: Extracting`);
        const applied = await builder.applyLayer(path, `layer ${id} of ${name}`, {
          diffId: config.diffIds?.[index] ?? null,
          signal: linked,
        });
        rootfsBytes += applied.fileBytes;
        emit(`${id}: Pull complete`);
      }
      await builder.finish();
      await syncFileSystem(building, this.logger);
      await rename(building, rootfs);
      renamed = true;
      const nowMs = this.nowMs();
      const record: ImageRecord = {
        version: 1,
        digest: resolved.digest,
        refs: [name],
        indexDigests: resolved.indexDigest === null ? [] : [resolved.indexDigest],
        config: config.run,
        blobs,
        downloadBytes: manifest.layers.reduce((sum, layer) => sum + layer.size, manifest.config.size),
        rootfsBytes,
        pulledAtMs: nowMs,
        lastUsedMs: nowMs,
        users: [],
      };
      await this.withRecords(() => {
        this.writeRecord(record);
      });
      return record;
    } catch (error) {
      failed.abort(error);
      await Promise.allSettled(layerPaths);
      const partial = renamed ? rootfs : building;
      if (partial !== null) await removeTree(partial);
      throw error;
    } finally {
      this.unpin(blobs);
    }
  }

  /** A layer's blob path, downloading it unless stored; one download however many pulls need it. */
  private async layerBlob(
    reference: ImageReference,
    layer: Descriptor,
    what: string,
    signal: AbortSignal,
    emit: Emit,
  ): Promise<string> {
    const path = this.blobPath(layer.digest);
    const id = shortId(layer.digest);
    if (await exists(path)) {
      emit(`${id}: Already exists`);
      return path;
    }
    return this.blobFetches.run(layer.digest, signal, emit, async (shared, sharedEmit) => {
      if (await exists(path)) return path;
      const temporary = join(
        this.dir,
        'tmp',
        `blob-${hexOf(layer.digest)}-${randomBytes(4).toString('hex')}`,
      );
      const progress = downloadProgress(id, layer.size, () => performance.now());
      try {
        await this.client.downloadBlob(reference, layer, temporary, {
          signal: shared,
          what,
          onBytes: (receivedBytes) => {
            const line = progress(receivedBytes);
            if (line !== null) sharedEmit(line);
          },
        });
        await rename(temporary, path);
      } catch (error) {
        await rm(temporary, { force: true });
        throw error;
      }
      sharedEmit(`${id}: Download complete`);
      return path;
    });
  }

  /** The config blob's bytes, from the store or the registry (then stored). */
  private async configBlob(
    reference: ImageReference,
    descriptor: Descriptor,
    what: string,
    signal: AbortSignal,
  ): Promise<Buffer> {
    const path = this.blobPath(descriptor.digest);
    const stored = await readFile(path).catch(() => null);
    if (stored !== null) return stored;
    const bytes = await this.client.readBlob(reference, descriptor, what, signal);
    await this.storeVerifiedBytes(descriptor.digest, bytes);
    return bytes;
  }

  /** Writes bytes already verified against `digest` to its blob, durably, unless there. */
  private async storeVerifiedBytes(digest: string, bytes: Uint8Array): Promise<void> {
    const path = this.blobPath(digest);
    if (await exists(path)) return;
    const temporary = join(this.dir, 'tmp', `blob-${hexOf(digest)}-${randomBytes(4).toString('hex')}`);
    const file = await open(temporary, 'wx', 0o600);
    try {
      await file.writeFile(bytes);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, path);
  }

  /**
   * The stored image with this manifest or index digest, counted as used now and remembering the
   * reference (and the index digest it was pulled by); null when it is not stored. Looked up under the
   * records' lock, so collect() cannot remove it between the look-up and the answer.
   */
  private async touch(
    digest: string,
    name: string,
    pulledDigest: string | null = digest,
  ): Promise<ImageRecord | null> {
    return this.withRecords(() => {
      const record = this.byDigest(digest);
      if (record === null) return null;
      record.refs = [...record.refs.filter((ref) => ref !== name), name].slice(-refsPerImageMax);
      if (
        pulledDigest !== null &&
        pulledDigest !== record.digest &&
        !record.indexDigests.includes(pulledDigest)
      ) {
        record.indexDigests.push(pulledDigest);
      }
      record.lastUsedMs = Math.max(record.lastUsedMs, this.nowMs());
      this.writeRecord(record);
      return record;
    });
  }

  private storedImage(record: ImageRecord, ref: string): StoredImage {
    return {
      ref,
      digest: record.digest,
      rootfs: this.rootfsPath(hexOf(record.digest)),
      config: structuredClone(record.config),
      sizeBytes: record.rootfsBytes,
    };
  }

  private byDigest(digest: string): ImageRecord | null {
    const direct = this.records.get(digest);
    if (direct !== undefined) return direct;
    for (const record of this.records.values()) if (record.indexDigests.includes(digest)) return record;
    return null;
  }

  private byRef(name: string): ImageRecord | null {
    let best: ImageRecord | null = null;
    for (const record of this.records.values()) {
      if (record.refs.includes(name) && (best === null || record.pulledAtMs > best.pulledAtMs)) best = record;
    }
    return best;
  }

  private writeRecord(record: ImageRecord): void {
    writeFileAtomic(this.recordPath(hexOf(record.digest)), JSON.stringify(record, null, 2) + '\n');
    this.records.set(record.digest, record);
  }

  private withRecords<T>(work: () => T | Promise<T>): Promise<T> {
    const result = this.recordLock.then(work);
    this.recordLock = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  private pin(digests: readonly string[]): void {
    for (const digest of digests) this.pinned.set(digest, (this.pinned.get(digest) ?? 0) + 1);
  }

  private unpin(digests: readonly string[]): void {
    for (const digest of digests) {
      const count = (this.pinned.get(digest) ?? 0) - 1;
      if (count > 0) this.pinned.set(digest, count);
      else this.pinned.delete(digest);
    }
  }

  private blobPath(digest: string): string {
    return join(this.dir, 'blobs', 'sha256', hexOf(digest));
  }

  private rootfsPath(hex: string): string {
    return join(this.dir, 'rootfs', hex);
  }

  private recordPath(hex: string): string {
    return join(this.dir, 'images', `${hex}.json`);
  }

  /** Creates the layout, empties tmp/, loads the records, and removes what a crash left half done. */
  private open(): Promise<void> {
    this.opened ??= this.load().catch((error: unknown) => {
      this.opened = null;
      throw error;
    });
    return this.opened;
  }

  private async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const sub of [['blobs', 'sha256'], ['rootfs'], ['images']]) {
      await mkdir(join(this.dir, ...sub), { recursive: true, mode: 0o700 });
    }
    await removeTree(join(this.dir, 'tmp'));
    await mkdir(join(this.dir, 'tmp'), { mode: 0o700 });
    for (const file of await readdir(join(this.dir, 'images'))) {
      const path = join(this.dir, 'images', file);
      if (!file.endsWith('.json')) {
        await rm(path, { force: true }); // a record write's temporary file
        continue;
      }
      const record = await readRecord(path);
      if (typeof record === 'string') {
        this.logger.warn('dropping a bad image record', { file, error: record });
        await rm(path, { force: true });
        continue;
      }
      if (`${hexOf(record.digest)}.json` !== file || !(await exists(this.rootfsPath(hexOf(record.digest))))) {
        this.logger.warn('dropping an image record without its root filesystem', { file });
        await rm(path, { force: true });
        continue;
      }
      this.records.set(record.digest, record);
    }
    for (const hex of await readdir(join(this.dir, 'rootfs'))) {
      if (this.records.has(`sha256:${hex}`)) continue;
      this.logger.info('removing a root filesystem without a record', { rootfs: hex });
      await removeTree(this.rootfsPath(hex));
    }
  }
}

async function readRecord(path: string): Promise<ImageRecord | string> {
  try {
    const parsed = imageRecordSchema.safeParse(JSON.parse(await readFile(path, 'utf8')));
    return parsed.success ? parsed.data : describeIssues(parsed.error);
  } catch (error) {
    return errorMessage(error);
  }
}

/** Docker's short layer id: the first 12 hex digits of its digest. */
export function shortId(digest: string): string {
  return hexOf(digest).slice(0, 12);
}

function hexOf(digest: string): string {
  assert(digestPattern.test(digest), `a sha256 digest: ${digest}`);
  return digest.slice('sha256:'.length);
}

/**
 * A layer's "Downloading" lines: the first, then at most one per pullProgressIntervalMs, in the docker
 * driver's format ("3f2a1b0c9d8e: Downloading 1.2 MB / 2.0 MB"). Returns null for bytes not worth a line.
 */
export function downloadProgress(
  id: string,
  totalBytes: number,
  nowMs: () => number,
): (receivedBytes: number) => string | null {
  let lastMs: number | null = null;
  return (receivedBytes) => {
    const atMs = nowMs();
    if (lastMs !== null && atMs - lastMs < pullProgressIntervalMs) return null;
    lastMs = atMs;
    return `${id}: Downloading ${megabytes(receivedBytes)} / ${megabytes(totalBytes)}`;
  };
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/**
 * rm -rf, also of trees an unprivileged process cannot empty as they are (an image's read-only
 * directories): those are made writable first.
 */
async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
  } catch (error) {
    if (!(error instanceof Error && 'code' in error && (error.code === 'EACCES' || error.code === 'EPERM')))
      throw error;
    await makeWritable(path);
    await rm(path, { recursive: true, force: true });
  }
}

async function makeWritable(path: string): Promise<void> {
  const info = await stat(path).catch(() => null);
  if (info === null || !info.isDirectory()) return;
  await chmod(path, 0o700).catch(() => undefined);
  for (const entry of await readdir(path, { withFileTypes: true })) {
    if (entry.isDirectory()) await makeWritable(join(path, entry.name));
  }
}

const execFileAsync = promisify(execFile);

/**
 * Flushes the file system holding `path` (coreutils `sync -f`, syncfs(2)) before a root filesystem is
 * renamed into the store: the store trusts what it holds, so what it holds must survive a power loss.
 * Best effort: a missing `sync` costs only that guarantee.
 */
async function syncFileSystem(path: string, logger: Logger): Promise<void> {
  try {
    await execFileAsync('sync', ['-f', path], { timeout: 120_000 });
  } catch (error) {
    logger.debug('could not sync the image store file system', { error: errorMessage(error) });
  }
}

interface SharedWork<T> {
  readonly controller: AbortController;
  readonly listeners: Set<{ emit: Emit }>;
  waiters: number;
  readonly result: PromiseWithResolvers<T>;
}

/**
 * Work that several callers wait on, by key: the first caller starts it; every caller gets its progress
 * lines and its result; it is cancelled (its signal aborted) only when every caller has given up.
 */
export class SharedWorks<T> {
  private readonly works = new Map<string, SharedWork<T>>();

  run(
    key: string,
    signal: AbortSignal | undefined,
    onProgress: Emit,
    start: (signal: AbortSignal, emit: Emit) => Promise<T>,
  ): Promise<T> {
    if (signal?.aborted) return Promise.reject(asError(signal.reason));
    let work = this.works.get(key);
    const fresh = work === undefined || work.controller.signal.aborted;
    if (work === undefined || fresh) {
      const result = Promise.withResolvers<T>();
      result.promise.catch(() => undefined); // every waiter may have left; none then hears the failure
      work = { controller: new AbortController(), listeners: new Set(), waiters: 0, result };
      this.works.set(key, work);
    }
    const current = work;
    const waiting = this.wait(current, signal, onProgress);
    if (fresh) {
      const emit: Emit = (line) => {
        for (const listener of current.listeners) {
          try {
            listener.emit(line);
          } catch {
            // A listener's failure is its own; the others still hear.
          }
        }
      };
      const forget = (): void => {
        if (this.works.get(key) === current) this.works.delete(key);
      };
      void (async () => start(current.controller.signal, emit))().then(
        (value) => {
          forget();
          current.result.resolve(value);
        },
        (error: unknown) => {
          forget();
          current.result.reject(error);
        },
      );
    }
    return waiting;
  }

  private wait(work: SharedWork<T>, signal: AbortSignal | undefined, onProgress: Emit): Promise<T> {
    const listener = { emit: onProgress };
    work.listeners.add(listener);
    work.waiters += 1;
    return new Promise<T>((resolve, reject) => {
      let left = false;
      const leave = (): boolean => {
        if (left) return false;
        left = true;
        work.listeners.delete(listener);
        work.waiters -= 1;
        signal?.removeEventListener('abort', onAbort);
        return true;
      };
      const onAbort = (): void => {
        if (!leave()) return;
        const reason = asError(signal?.reason);
        if (work.waiters > 0) {
          reject(reason);
          return;
        }
        // The last waiter out stops the work and waits for it to end, so nothing of it (a temporary file)
        // outlives the caller's answer.
        work.controller.abort(reason);
        const done = (): void => {
          reject(reason);
        };
        work.result.promise.then(done, done);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      work.result.promise.then(
        (value) => {
          if (leave()) resolve(value);
        },
        (error: unknown) => {
          if (leave()) reject(asError(error));
        },
      );
    });
  }
}

/** A rejection reason as an Error (an abort's reason is one unless a caller passed something else). */
function asError(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason));
}
