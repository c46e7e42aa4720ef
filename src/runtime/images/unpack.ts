/**
 * Unpacks image layers, in order, into one flattened directory: the root filesystem an image's tasks run in.
 *
 * In: layer files (tar, plain or gzip or zstd, told apart by their first bytes), a directory to build in.
 * Out: that directory as the image describes it. Layers follow the OCI image spec's changeset rules: a
 * `.wh.NAME` entry deletes NAME as earlier layers left it, a `.wh..wh..opq` entry empties its directory of
 * what earlier layers put there; files, directories, symlinks and hardlinks keep the tar's mode, owner
 * (when run as root, as the agent is) and mtime. Device nodes and fifos are skipped with a note: a task
 * gets its /dev from its runtime, not from the image.
 *
 * Nothing is ever written outside the directory: an entry named absolutely or with `..`, a hardlink to
 * such a name, and a path that leads out through a symlink are refused (CORRUPT_DATA). A symlink in a
 * parent directory is followed the way the image will see it once it is the root (`lib -> /usr/lib`
 * resolves to DIR/usr/lib), so merged-/usr images unpack as they do under Docker.
 *
 * Tar parsing: tar-stream (2.x, the version dockerode already brings; pax and GNU long names included).
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import {
  chmod,
  chown,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  open,
  readdir,
  readlink,
  rm,
  symlink,
  utimes,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Transform, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createZstdDecompress } from 'node:zlib';
import tar from 'tar-stream';
import { errorMessage, isShoalError, ShoalError } from '../../shared/index.ts';

export const whiteoutPrefix = '.wh.';
export const opaqueWhiteout = '.wh..wh..opq';
/** Symlinks followed while resolving one path before it counts as a loop (Linux's own limit). */
export const symlinkFollowsMax = 40;

export type Compression = 'gzip' | 'zstd' | 'none';

/** A layer's compression, from its first bytes (gzip 1f 8b, zstd 28 b5 2f fd); anything else is read as tar. */
export function detectCompression(head: Uint8Array): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd';
  return 'none';
}

/**
 * An entry's name as path components inside the root, or a reason to refuse it. `./a/b/` → ['a', 'b'];
 * `./` → [] (the root itself).
 */
export function entryComponents(name: string): { components: string[] } | { refused: string } {
  if (name.includes('\0')) return { refused: 'it contains a NUL byte' };
  if (name.startsWith('/')) return { refused: 'it is an absolute path' };
  const components = name.split('/').filter((part) => part !== '' && part !== '.');
  if (components.includes('..')) return { refused: 'it contains ..' };
  return { components };
}

export interface RootfsBuilderInit {
  /** The directory to build in; it must exist, and should be empty at the first layer. */
  root: string;
  /** Give entries the tar's uid and gid. Default: whether this process runs as root (only root may). */
  preserveOwnership?: boolean;
  /** Told of each entry skipped (device nodes, fifos), one line each. */
  onNote?: (line: string) => void;
}

export interface LayerResult {
  /** Bytes of regular files this layer wrote. */
  fileBytes: number;
  /** sha256 of the uncompressed tar (the layer's diff id). */
  diffId: string;
}

interface DirectoryAttributes {
  mode: number;
  mtime: Date | null;
}

/**
 * Builds a root filesystem layer by layer: applyLayer() for each, in order, then finish() once, which gives
 * directories their modes and mtimes (they change as later entries land in them).
 */
export class RootfsBuilder {
  private readonly root: string;
  private readonly preserveOwnership: boolean;
  private readonly onNote: (line: string) => void;
  /** Directories' final attributes, by host path; applied by finish(). */
  private readonly directories = new Map<string, DirectoryAttributes>();

  constructor(init: RootfsBuilderInit) {
    this.root = init.root;
    this.preserveOwnership = init.preserveOwnership ?? process.getuid?.() === 0;
    this.onNote = init.onNote ?? (() => undefined);
  }

  /**
   * Applies one layer file. `what` names it in errors ("layer 3f2a1b0c9d8e of REF"); `diffId`, when the
   * image config gives one, is checked against the uncompressed tar, and a mismatch refused.
   */
  async applyLayer(
    path: string,
    what: string,
    options: { diffId?: string | null; signal?: AbortSignal } = {},
  ): Promise<LayerResult> {
    const head = Buffer.alloc(4);
    const handle = await open(path, 'r');
    try {
      await handle.read(head, 0, head.length, 0);
    } finally {
      await handle.close();
    }
    const compression = detectCompression(head);
    const hash = createHash('sha256');
    const hasher = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    const layer = new LayerApplier(this.root, what, this.preserveOwnership, this.onNote, this.directories);
    const extract = tar.extract();
    extract.on('entry', (header, stream, next) => {
      layer.apply(header, stream).then(
        () => {
          next();
        },
        (error: unknown) => {
          stream.resume();
          next(error);
        },
      );
    });
    const stages: (Readable | Writable)[] = [createReadStream(path)];
    if (compression === 'gzip') stages.push(createGunzip());
    if (compression === 'zstd') stages.push(createZstdDecompress());
    stages.push(hasher, extract);
    try {
      await pipeline(stages, options.signal ? { signal: options.signal } : {});
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason;
      throw layerError(error, what);
    }
    const diffId = `sha256:${hash.digest('hex')}`;
    if (options.diffId !== undefined && options.diffId !== null && options.diffId !== diffId) {
      throw new ShoalError(
        'CORRUPT_DATA',
        `${what} refused: its uncompressed content is ${diffId} where the image config says ${options.diffId}`,
      );
    }
    return { fileBytes: layer.fileBytes, diffId };
  }

  /** Gives directories their final modes and mtimes, deepest first (setting a child's touches its parent). */
  async finish(): Promise<void> {
    // The root comes as the caller made it (mkdtemp: 0700) unless the image's "./" entry says otherwise.
    if (!this.directories.has(this.root)) this.directories.set(this.root, { mode: 0o755, mtime: null });
    const paths = [...this.directories.keys()].sort((a, b) => b.length - a.length);
    for (const path of paths) {
      const attributes = this.directories.get(path);
      if (attributes === undefined) continue;
      try {
        await chmod(path, attributes.mode);
        if (attributes.mtime !== null) await utimes(path, attributes.mtime, attributes.mtime);
      } catch (error) {
        if (!isErrno(error, 'ENOENT')) throw error; // removed by a later layer's whiteout
      }
    }
  }
}

/** One layer's application: its entries in order, and the paths it wrote (an opaque whiteout keeps those). */
class LayerApplier {
  fileBytes = 0;
  /** Host paths this layer wrote: an opaque whiteout in the same layer must not delete them. */
  private readonly written = new Set<string>();

  private readonly root: string;
  private readonly what: string;
  private readonly preserveOwnership: boolean;
  private readonly onNote: (line: string) => void;
  private readonly directories: Map<string, DirectoryAttributes>;

  constructor(
    root: string,
    what: string,
    preserveOwnership: boolean,
    onNote: (line: string) => void,
    directories: Map<string, DirectoryAttributes>,
  ) {
    this.root = root;
    this.what = what;
    this.preserveOwnership = preserveOwnership;
    this.onNote = onNote;
    this.directories = directories;
  }

  async apply(header: tar.Headers, stream: Readable): Promise<void> {
    const name = header.name;
    const parsed = entryComponents(name);
    if ('refused' in parsed) throw this.refuse(name, parsed.refused);
    const components = parsed.components;
    const type = header.type ?? 'file';
    const base = components.at(-1);

    if (base === undefined) {
      // The root itself ("./"): only its attributes.
      stream.resume();
      if (type === 'directory') this.directories.set(this.root, attributesOf(header));
      return;
    }
    if (base === opaqueWhiteout) {
      stream.resume();
      const directory = await this.resolve(components.slice(0, -1), name);
      await this.emptyOpaque(directory);
      return;
    }
    if (base.startsWith(whiteoutPrefix)) {
      stream.resume();
      // `.wh..wh.*` other than the opaque marker are aufs's own bookkeeping (hardlink dirs): nothing to apply.
      if (base.startsWith(`${whiteoutPrefix}${whiteoutPrefix}`)) return;
      const parent = await this.resolve(components.slice(0, -1), name);
      const target = base.slice(whiteoutPrefix.length);
      if (target === '' || target === '.' || target === '..')
        throw this.refuse(name, 'it whites out nothing');
      await rm(join(parent, target), { recursive: true, force: true });
      return;
    }

    const parent = await this.resolve(components.slice(0, -1), name);
    const made = await mkdir(parent, { recursive: true, mode: 0o755 });
    // Directories no entry names get 0755 whatever the umask, as Docker makes them: from parent up to the
    // first one mkdir made.
    if (made !== undefined) {
      for (let at = parent; ; at = dirname(at)) {
        if (!this.directories.has(at)) this.directories.set(at, { mode: 0o755, mtime: null });
        if (at === made || at.length <= this.root.length) break;
      }
    }
    const path = join(parent, base);
    switch (type) {
      case 'directory': {
        await this.clear(path, true);
        await mkdir(path, { mode: 0o700 }).catch((error: unknown) => {
          if (!isErrno(error, 'EEXIST')) throw error;
        });
        // Owner-writable while layers land in it; its own mode comes in finish().
        await chmod(path, 0o700);
        await this.own(path, header, false);
        this.directories.set(path, attributesOf(header));
        stream.resume();
        break;
      }
      case 'file':
      case 'contiguous-file': {
        await this.clear(path, false);
        await pipeline(stream, createWriteStream(path, { flags: 'wx', mode: 0o600 }));
        this.fileBytes += header.size ?? 0;
        await this.own(path, header, false);
        await chmod(path, (header.mode ?? 0o644) & 0o7777); // after chown, which clears setuid bits
        if (header.mtime) await utimes(path, header.mtime, header.mtime);
        break;
      }
      case 'symlink': {
        stream.resume();
        const target = header.linkname ?? '';
        if (target === '' || target.includes('\0')) throw this.refuse(name, 'the symlink has no target');
        await this.clear(path, false);
        await symlink(target, path);
        await this.own(path, header, true);
        if (header.mtime) await lutimes(path, header.mtime, header.mtime);
        break;
      }
      case 'link': {
        stream.resume();
        const linkName = header.linkname ?? '';
        const linkParsed = entryComponents(linkName);
        if ('refused' in linkParsed)
          throw this.refuse(name, `its hardlink target ${linkName}: ${linkParsed.refused}`);
        const linkBase = linkParsed.components.at(-1);
        if (linkBase === undefined) throw this.refuse(name, 'it is a hardlink to the root');
        const source = join(await this.resolve(linkParsed.components.slice(0, -1), name), linkBase);
        const sourceInfo = await lstat(source).catch(() => null);
        if (sourceInfo === null)
          throw this.refuse(name, `it is a hardlink to ${linkName}, which does not exist`);
        if (sourceInfo.isDirectory())
          throw this.refuse(name, `it is a hardlink to the directory ${linkName}`);
        if (source === path) break;
        await this.clear(path, false);
        await link(source, path);
        break;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        stream.resume();
        this.onNote(
          `${this.what}: skipped ${type} /${components.join('/')} (tasks get their devices from the runtime)`,
        );
        return;
      }
      // tar-stream folds these headers into the entry they describe; one seen here is a stray.
      case 'pax-header':
      case 'pax-global-header':
      case 'gnu-long-path':
      case 'gnu-long-link-path': {
        stream.resume();
        this.onNote(`${this.what}: skipped /${components.join('/')} of tar type ${type}`);
        return;
      }
    }
    // Its parents too: an opaque whiteout later in this layer keeps the directories this layer made implicitly.
    for (let at = path; at.length > this.root.length && !this.written.has(at); at = dirname(at))
      this.written.add(at);
  }

  /**
   * The host path of a directory given as components under the root, following symlinks as the image will
   * see them (an absolute target starts again at the root). Missing components are left for mkdir to make.
   * Refuses a path that leads out of the root, through a file, or round a symlink loop.
   */
  private async resolve(components: readonly string[], entryName: string): Promise<string> {
    const resolved: string[] = [];
    const pending = [...components];
    let follows = 0;
    let missing = false;
    while (pending.length > 0) {
      const part = pending.shift();
      if (part === undefined || part === '' || part === '.') continue;
      if (part === '..') {
        if (resolved.length === 0)
          throw this.refuse(entryName, 'it leads out of the image root through a symlink');
        resolved.pop();
        continue;
      }
      const hostPath = join(this.root, ...resolved, part);
      const info = missing ? null : await lstat(hostPath).catch(() => null);
      if (info === null) {
        missing = true;
        resolved.push(part);
        continue;
      }
      if (info.isSymbolicLink()) {
        follows += 1;
        if (follows > symlinkFollowsMax) throw this.refuse(entryName, 'its path has a symlink loop');
        const target = await readlink(hostPath);
        if (target.startsWith('/')) resolved.length = 0;
        pending.unshift(...target.split('/'));
        continue;
      }
      if (!info.isDirectory())
        throw this.refuse(entryName, `/${[...resolved, part].join('/')} is not a directory`);
      resolved.push(part);
    }
    return join(this.root, ...resolved);
  }

  /** Removes what is at `path`, unless it is a directory and a directory is what comes (tar merges those). */
  private async clear(path: string, keepDirectory: boolean): Promise<void> {
    const info = await lstat(path).catch(() => null);
    if (info === null) return;
    if (keepDirectory && info.isDirectory()) return;
    await rm(path, { recursive: true, force: true });
  }

  /** Empties a directory of what earlier layers put in it, keeping what this layer wrote (the spec's opaque whiteout). */
  private async emptyOpaque(directory: string): Promise<void> {
    const entries = await readdir(directory).catch((error: unknown) => {
      if (isErrno(error, 'ENOENT') || isErrno(error, 'ENOTDIR')) return [];
      throw error;
    });
    for (const entry of entries) {
      const path = join(directory, entry);
      if (!this.written.has(path)) {
        await rm(path, { recursive: true, force: true });
        continue;
      }
      const info = await lstat(path);
      if (info.isDirectory()) await this.emptyOpaque(path);
    }
  }

  private async own(path: string, header: tar.Headers, isSymlink: boolean): Promise<void> {
    if (!this.preserveOwnership) return;
    const uid = header.uid ?? 0;
    const gid = header.gid ?? 0;
    await (isSymlink ? lchown(path, uid, gid) : chown(path, uid, gid));
  }

  private refuse(name: string, why: string): ShoalError {
    return new ShoalError(
      'CORRUPT_DATA',
      `${this.what} refused: entry ${JSON.stringify(name.slice(0, 200))}: ${why}`,
    );
  }
}

function attributesOf(header: tar.Headers): DirectoryAttributes {
  return { mode: (header.mode ?? 0o755) & 0o7777, mtime: header.mtime ?? null };
}

/**
 * A layer's failure as one line: our own refusals as they are, a file system failure (it has a syscall) as
 * INTERNAL, anything else (a tar or compression error) as CORRUPT_DATA.
 */
function layerError(error: unknown, what: string): unknown {
  if (isShoalError(error)) return error;
  if (error instanceof Error && 'syscall' in error) {
    return new ShoalError('INTERNAL', `unpacking ${what}: ${errorMessage(error)}`, { cause: error });
  }
  return new ShoalError('CORRUPT_DATA', `${what} is not a valid tar layer: ${errorMessage(error)}`, {
    cause: error,
  });
}

function isErrno(error: unknown, code: string): boolean {
  return error instanceof Error && 'code' in error && error.code === code;
}
