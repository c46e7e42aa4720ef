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
