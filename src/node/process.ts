/**
 * `shoal agent` as a process: starts the node and its API (TCP, with TLS when asked, and a Unix socket in
 * the data dir), says how to join, and stops cleanly on SIGTERM, SIGINT or `shoal leave` (the node's tasks
 * stop, leadership is handed over, the leave announced).
 */
import { hostname, networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { startApiServer, type ApiServers, type ApiTlsIdentity } from '../api/index.ts';
import { invalidArgument, type Logger } from '../shared/index.ts';
import { advertisedHost, formatHostPort, isLoopbackHost, type HostPort } from './address.ts';
import { apiCertificateNames } from './certificates.ts';
import type { NodeConfig } from './config.ts';
import { ShoalNode, apiSocketFileName, managementTokenFileName } from './node.ts';
import { AutoTls, readOperatorCertificate, type ApiTlsMode } from './tls.ts';

/** How long a stopping agent gives its tasks to exit before they are killed. */
export const shutdownTaskGraceMs = 5000;

export interface AgentProcessInit {
  readonly config: NodeConfig;
  /** Where the HTTP API listens on TCP. */
  readonly api: HostPort;
  /** Whether that listener speaks TLS, and with which certificate. */
  readonly tls: ApiTlsMode;
  readonly logger: Logger;
  /** Where the one-time join hint goes (stdout). */
  readonly write: (text: string) => void;
  /** Ends the process; the agent calls it once it has stopped. */
  readonly exit: (code: number) => void;
}

/** Starts the agent; resolves once it serves, and keeps running on its own handles until a signal or a leave. */
export async function runAgentProcess(init: AgentProcessInit): Promise<ShoalNode> {
  let stopping = false;
  const { config, api, logger, tls } = init;
  // Anyone who reaches the API can run processes as this agent's user: off loopback it must be encrypted.
  if (!isLoopbackHost(api.host) && tls.kind === 'off') {
    throw invalidArgument(
      `refusing to serve the API on ${formatHostPort(api)} without TLS: add --tls auto (a certificate from the cluster's CA) or --tls-cert FILE --tls-key FILE, or bind it to loopback (--api 127.0.0.1:4701)`,
    );
  }
  // Read before the node starts, so a wrong file fails at once.
  const operatorCertificate =
    tls.kind === 'files' ? readOperatorCertificate(tls.certificateFile, tls.keyFile) : null;
  const node = await ShoalNode.start(config, logger);
  let servers: ApiServers;
  let autoTls: AutoTls | null = null;
  const socket = join(config.dataDir, apiSocketFileName);
  try {
    let certificate: ApiTlsIdentity | null = operatorCertificate;
    if (tls.kind === 'auto') {
      autoTls = new AutoTls({
        dataDir: config.dataDir,
        clusterKey: node.clusterKey,
        nodeName: config.name,
        names: apiCertificateNames({
          apiHost: api.host,
          hostname: hostname(),
          nodeName: config.name,
          interfaceAddresses: Object.values(networkInterfaces()).flatMap((addresses) =>
            (addresses ?? []).map((address) => address.address),
          ),
        }),
        state: node.state,
        control: node.control,
        logger: logger.child('tls'),
        isStopped: () => stopping,
      });
      certificate = await autoTls.identity();
    }
    servers = await startApiServer({
      backend: node.backend,
      logger: logger.child('api'),
      tcp: api,
      ...(certificate === null ? {} : { tls: certificate }),
      unixSocket: socket,
      observe: (route, code, seconds) => node.metrics.apiRequest(route, code, seconds),
    });
  } catch (error) {
    await node.stop();
    throw error;
  }
  const apiAddress = `${tls.kind === 'off' ? '' : 'https://'}${formatHostPort({ host: advertisedHost(api.host), port: servers.tcpPort ?? api.port })}`;
  const caFingerprint = autoTls?.caFingerprint() ?? null;
  autoTls?.startRenewal((identity) => servers.setTls(identity));
  logger.info('agent started', {
    name: config.name,
    id: node.id,
    listen: node.joinAddress,
    api: apiAddress,
    socket,
    ...(caFingerprint === null ? {} : { caFingerprint }),
  });
  // The cluster key is a secret: printed once, by the node that made it, and never logged.
  init.write(
    `shoal agent ${config.name} is up; its API is ${apiAddress} (with a token) and ${socket} (for its own user).\n` +
      (caFingerprint === null
        ? ''
        : `Users log in from another machine with: shoal login ${apiAddress} --ca-fingerprint ${caFingerprint} --token SECRET\n`) +
      (node.createdCluster
        ? `This node created a new cluster. To join another node to it, run there:\n` +
          `  shoal agent --join ${node.joinAddress} --key ${node.clusterKey}\n` +
          `The cluster's first admin token is in ${join(config.dataDir, managementTokenFileName)}.\n`
        : `To join another node: shoal agent --join ${node.joinAddress} --key KEY (an admin prints KEY with shoal key show).\n`),
  );
  const shutdown = (why: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info(`stopping on ${why}`);
    autoTls?.stop();
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
