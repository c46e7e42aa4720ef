/** `shoal events`: what happens in the cluster, as it happens. */
import type { ShoalClient } from '../../api/index.ts';
import { ShoalError, errorMessage } from '../../shared/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { apiFlags, parseWhole } from '../flags.ts';
import { formatEvent } from '../format.ts';

export const eventsCommand: Command = defineCommand({
  name: 'events',
  summary: 'stream task, node and leader events as they happen',
  synopsis: ['shoal events [--index N] [--task ID] [--namespace NS] [--json]'],
  description:
    'Prints events as the node --addr names applies them, one a line (INDEX TIME TYPE, then what): tasks\n' +
    'submitted, assigned, changing state or asked to stop, and what their agents saw; nodes up, down or\n' +
    'draining; new leaders. INDEX is the Raft index of the change. With --index, first every event after\n' +
    'that index the node still holds. Runs until Ctrl-C; if the stream breaks, it says the --index to go on\n' +
    'from.',
  options: {
    index: {
      type: 'string',
      value: 'N',
      help: 'first the events after this Raft index (0: all the node holds; default: from now on)',
    },
    task: { type: 'string', value: 'ID', help: "only this task's events" },
    namespace: { type: 'string', value: 'NS', help: 'only the events of tasks in this namespace' },
    json: { type: 'boolean', help: 'print each line as the API sends it, heartbeats included' },
    ...apiFlags,
  },
  allowPositionals: false,
  run: ({ values }) => {
    const index = parseWhole(values.index, '--index', 0, Number.MAX_SAFE_INTEGER);
    return withClient(values, (client) =>
      printEvents(client, {
        ...(index === null ? {} : { index }),
        ...(values.task === undefined ? {} : { task: values.task }),
        ...(values.namespace === undefined ? {} : { namespace: values.namespace }),
        json: values.json,
      }),
    );
  },
});

/**
 * Prints the stream until it ends: only when broken or cut by the node, then it says the index to go on
 * from; or when stdout's reader goes away (`shoal events | head`), quietly.
 */
async function printEvents(
  client: ShoalClient,
  options: { readonly index?: number; readonly task?: string; readonly namespace?: string; json: boolean },
): Promise<number> {
  const { json, ...query } = options;
  const stop = new AbortController();
  // Every write error, not just the first: lines already on their way fail too.
  const readerGone = (): void => stop.abort();
  process.stdout.on('error', readerGone);
  // Where a resumed stream may start: an index read in full. One entry's events come together, but a broken
  // connection may cut them apart, so the last event's index counts once a later one (or a heartbeat) came.
  let whole = options.index ?? null;
  let last: number | null = null;
  let begun = false;
  let ended = '';
  try {
    for await (const frame of client.events({ ...query, signal: stop.signal })) {
      begun = true;
      if (stop.signal.aborted) break;
      const line = json ? `${JSON.stringify(frame)}\n` : formatEvent(frame);
      if (line !== null && !process.stdout.write(line)) await drained(stop.signal);
      if (frame.type === 'error') {
        ended = `: ${frame.error.message}`;
        break;
      }
      if (frame.type === 'heartbeat' || frame.type === 'reset') {
        whole = frame.index;
        last = null;
      } else {
        if (last !== null && frame.index > last) whole = last;
        last = frame.index;
      }
    }
  } catch (error) {
    if (stop.signal.aborted) return 0;
    // Before the stream began, the error says why (unreachable, refused).
    if (!begun) throw error;
    ended = ` (${errorMessage(error)})`;
  } finally {
    process.stdout.off('error', readerGone);
  }
  if (stop.signal.aborted) return 0;
  const resume = whole === null ? '' : `; go on with --index ${whole}`;
  throw new ShoalError('UNAVAILABLE', `the event stream from ${client.address} ended${ended}${resume}`);
}

/** Resolves once stdout takes more, or its reader is gone. */
function drained(gone: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      process.stdout.off('drain', done);
      gone.removeEventListener('abort', done);
      resolve();
    };
    process.stdout.once('drain', done);
    gone.addEventListener('abort', done, { once: true });
  });
}
