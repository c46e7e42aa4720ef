import { closeSync, fsyncSync, openSync, renameSync, writeFileSync } from 'node:fs';

/**
 * Writes a file so that a crash leaves either the old or the new content, never a mix. `durable` (the
 * default) also fsyncs it, so the new content survives the machine losing power; without it, the rename
 * still makes the write atomic for a crash of the process, and costs no disk flush.
 */
export function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: { readonly mode?: number; readonly durable?: boolean } = {},
): void {
  const temporary = `${path}.tmp`;
  writeFileSync(temporary, data, { mode: options.mode ?? 0o600 });
  if (options.durable ?? true) {
    const fd = openSync(temporary, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
  renameSync(temporary, path);
}
