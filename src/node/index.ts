export {
  advertisedHost,
  formatHostPort,
  isLoopbackHost,
  parseHostPort,
  parseJoinTarget,
  type HostPort,
} from './address.ts';
export {
  apiDefault,
  dnsDefault,
  listenDefault,
  nodeNamePattern,
  reservedCpuMillisDefault,
  reservedDiskBytesDefault,
  reservedMemoryBytesDefault,
  validateNodeConfig,
  type NodeConfig,
} from './config.ts';
export { generateClusterKey, validateClusterKey } from './identity.ts';
export { controlProtocol, renewalNodesMax } from './control.ts';
export { leaseRenewIntervalMs, taskLeaseMs } from './lease.ts';
export { createP2p, type ShoalLibp2p } from './p2p.ts';
export { NodeMetrics, type MetricsSources } from './metrics.ts';
export { ShoalNode, apiSocketFileName, managementTokenFileName } from './node.ts';
export { shoalVersion } from '../shared/index.ts';
export { runAgentProcess, shutdownTaskGraceMs, type AgentProcessInit } from './process.ts';
export {
  apiCertificateCheckIntervalMs,
  apiCertificateRenewBeforeMs,
  apiCertificateValidityMs,
  certificateFingerprint,
  parseFingerprint,
} from './certificates.ts';
export { type ApiTlsMode } from './tls.ts';
