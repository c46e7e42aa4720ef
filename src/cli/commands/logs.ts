/** `shoal logs`: a task's stdout and stderr, once or as they come. */
import type { ShoalClient } from '../../api/index.ts';
import { ShoalError } from '../../shared/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { apiFlags, parseWhole } from '../flags.ts';
import { onlyTaskId } from './tasks.ts';

export const logsCommand: Command = defineCommand({
  name: 'logs',
  summary: "print a task's stdout and stderr; -f streams them until the task ends",
  synopsis: ['shoal logs [-f] [--tail BYTES] ID'],
  description:
    "Prints a task's output (ID from shoal ps), wherever it runs: its stdout to stdout, its stderr to\n" +
    'stderr. With --follow, the output keeps coming until the task ends (Ctrl-C stops following only).',
  options: {
    follow: { type: 'boolean', short: 'f', help: 'keep printing new output until the task ends' },
    tail: { type: 'string', value: 'BYTES', help: 'start this many bytes from the end of each stream' },
    ...apiFlags,
  },
  allowPositionals: true,
  run: ({ values, positionals }) => {
    const taskId = onlyTaskId(positionals, 'shoal logs [-f] ID');
    const tailBytes = parseWhole(values.tail, '--tail', 0, Number.MAX_SAFE_INTEGER);
    return withClient(values, async (client) => {
      if (values.follow) return followLogs(client, taskId, tailBytes);
      const output = await client.logs(taskId, tailBytes ?? undefined);
      process.stdout.write(output.stdout);
      process.stderr.write(output.stderr);
      return 0;
    });
  },
});

/** Copies a followed task's output to stdout and stderr as it comes, until the task ends. */
async function followLogs(client: ShoalClient, taskId: string, tailBytes: number | null): Promise<number> {
  const frames = client.followLogs(taskId, tailBytes === null ? {} : { tailBytes });
  for await (const frame of frames) {
    if ('data' in frame) {
      const out = frame.stream === 'stderr' ? process.stderr : process.stdout;
      if (!out.write(Buffer.from(frame.data, 'base64')))
        await new Promise((resolve) => out.once('drain', resolve));
    } else if ('end' in frame) {
      process.stderr.write(`shoal logs: ${frame.end}\n`);
      return 0;
    } else if ('error' in frame) {
      // The stream had begun, so the request itself was valid: whatever the code, the exit status is 1.
      throw new ShoalError('UNAVAILABLE', frame.error.message);
    }
  }
  throw new ShoalError(
    'UNAVAILABLE',
    `the log stream from ${client.address} broke off before the task ended`,
  );
}
