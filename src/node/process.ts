/**
 * `shoal agent` as a process: starts the node and its API (TCP, and a Unix socket in the data dir), says
 * how to join, and stops cleanly on SIGTERM, SIGINT or `shoal leave` (the node's tasks stop, leadership is
 * handed over, the leave announced).
 */
import { join } from 'node:path';
import { startApiServer, type ApiServers } from '../api/index.ts';
import { invalidArgument, type Logger } from '../shared/index.ts';
import { formatHostPort, isLoopbackHost, type HostPort } from './address.ts';
import type { NodeConfig } from './config.ts';
import { ShoalNode, apiSocketFileName, managementTokenFileName } from './node.ts';

/** How long a stopping agent gives its tasks to exit before they are killed. */
export const shutdownTaskGraceMs = 5000;

export interface AgentProcessInit {
  readonly config: NodeConfig;
  /** Where the HTTP API listens on TCP. */
  readonly api: HostPort;
  readonly logger: Logger;
  /** Where the one-time join hint goes (stdout). */
  readonly write: (text: string) => void;
  /** Ends the process; the agent calls it once it has stopped. */
  readonly exit: (code: number) => void;
}

/** Starts the agent; resolves once it serves, and keeps running on its own handles until a signal or a leave. */
export async function runAgentProcess(init: AgentProcessInit): Promise<ShoalNode> {
  const { config, api, logger } = init;
  // Anyone who reaches the API can run processes as this agent's user: off loopback it must be encrypted.
  if (!isLoopbackHost(api.host)) {
    throw invalidArgument(
      `refusing to serve the API on ${formatHostPort(api)} without TLS, which this version does not have yet; bind it to a loopback address (--api 127.0.0.1:4701) and reach other nodes through theirs`,
    );
  }
  const node = await ShoalNode.start(config, logger);
  let servers: ApiServers;
  const socket = join(config.dataDir, apiSocketFileName);
  try {
    servers = await startApiServer({
      backend: node.backend,
      logger: logger.child('api'),
      tcp: api,
      unixSocket: socket,
    });
  } catch (error) {
    await node.stop();
    throw error;
  }
  logger.info('agent started', {
    name: config.name,
    id: node.id,
    listen: node.joinAddress,
    api: formatHostPort(api),
    socket,
  });
  // The cluster key is a secret: printed once, by the node that made it, and never logged.
  init.write(
    `shoal agent ${config.name} is up; its API is ${formatHostPort(api)} (with a token) and ${socket} (for its own user).\n` +
      (node.createdCluster
        ? `This node created a new cluster. To join another node to it, run there:\n` +
          `  shoal agent --join ${node.joinAddress} --key ${node.clusterKey}\n` +
          `The cluster's first admin token is in ${join(config.dataDir, managementTokenFileName)}.\n`
        : `To join another node: shoal agent --join ${node.joinAddress} --key KEY (an admin prints KEY with shoal key show).\n`),
  );
  let stopping = false;
  const shutdown = (why: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info(`stopping on ${why}`);
    servers.close();
    void node
      .leave(shutdownTaskGraceMs)
      .catch(() => undefined)
      .then(() => node.stop())
      .finally(() => init.exit(0));
  };
  node.onLeaveRequested = () => shutdown('shoal leave');
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  return node;
}
