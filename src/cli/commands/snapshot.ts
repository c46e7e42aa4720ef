/**
 * `shoal snapshot save|restore`: a backup of the replicated state in one checksummed file, and its restore
 * into a new cluster. The file is checked here before anything is sent (and again by the node), so a
 * damaged or foreign one is refused with the reason and touches no cluster.
 */
import { readFileSync, statSync } from 'node:fs';
import {
  backupFileBytesMax,
  backupStateBytesMax,
  openBackupFile,
  parseBackupFile,
} from '../../cluster/index.ts';
import { ShoalError, invalidArgument, writeFileAtomic } from '../../shared/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { apiFlags } from '../flags.ts';

export const snapshotCommand: Command = defineCommand({
  name: 'snapshot',
  summary: "save the cluster's state to a file, or restore one into a new cluster",
  synopsis: ['shoal snapshot save FILE', 'shoal snapshot restore FILE'],
  description:
    'save writes a consistent backup of the replicated state (tasks, namespaces, token hashes, the\n' +
    'sealed cluster CA) to FILE (0600), with its SHA-256: what every node had committed when it was asked.\n' +
    'restore puts such a file into a cluster that has no tasks yet (start one agent on an empty data dir,\n' +
    'then restore through it): tasks that waited come back waiting; tasks that ran on the old cluster come\n' +
    'back lost, and their restart policy queues them again; tokens keep working. A damaged or foreign\n' +
    "file is refused with the reason. Both need an admin token, or the node's Unix socket.",
  options: { ...apiFlags },
  allowPositionals: true,
  run: async ({ values, positionals }, usage) => {
    const [action, path, ...rest] = positionals;
    if (action === undefined) {
      process.stdout.write(usage);
      return 0;
    }
    if ((action !== 'save' && action !== 'restore') || path === undefined || rest.length > 0)
      throw invalidArgument('use shoal snapshot save FILE or shoal snapshot restore FILE');
    if (action === 'save') {
      return withClient(values, async (client) => {
        const file = await client.snapshot();
        writeFileAtomic(path, `${JSON.stringify(file)}\n`, { mode: 0o600 });
        const stateBytes = Buffer.byteLength(file.state);
        process.stderr.write(
          `saved the state at index ${file.index} (${file.tasks} tasks, ${stateBytes} bytes) to ${path}\n`,
        );
        if (stateBytes > backupStateBytesMax)
          process.stderr.write(
            `warning: this version restores at most ${backupStateBytesMax} bytes of state; keep the data dirs too\n`,
          );
        return 0;
      });
    }
    const file = openBackupFile(parseBackupFile(readSnapshotFile(path), path), path).file;
    return withClient(values, async (client) => {
      const restored = await client.restoreSnapshot(file);
      process.stderr.write(
        `restored ${path} (index ${restored.snapshotIndex} of its cluster, saved ${file.createdAt}): ` +
          `${restored.tasks} tasks: ${restored.waiting} waiting, ${restored.requeued} ran and are queued again, ${restored.lost} ran and stay lost; ` +
          `${restored.namespaces} namespaces, ${restored.tokens} tokens` +
          `${restored.clusterCaKept ? ', the cluster CA' : ''}\n`,
      );
      return 0;
    });
  },
});

function readSnapshotFile(path: string): string {
  let bytes: number;
  try {
    bytes = statSync(path).size;
  } catch {
    throw invalidArgument(`cannot read ${path}: no such file`);
  }
  if (bytes > backupFileBytesMax)
    throw new ShoalError(
      'TOO_LARGE',
      `${path} has ${bytes} bytes; a snapshot this version restores has at most ${backupFileBytesMax}`,
    );
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw invalidArgument(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}
