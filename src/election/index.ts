export { RaftCore, parseConfig, type RaftInit } from './raft.ts';
export {
  RaftService,
  defaultCompactionPolicy,
  defaultRaftTimings,
  type CompactionPolicy,
  type RaftServiceInit,
  type RaftTimings,
} from './service.ts';
export { Libp2pRaftTransport, raftProtocol, type RaftTransport } from './transport.ts';
export { Wal, loadSnapshot, saveSnapshot, snapshotFileName, walFileName, writeSnapshotAside } from './wal.ts';
export type {
  ClusterConfig,
  HardState,
  LogEntry,
  NodeId,
  RaftMessage,
  RaftStatus,
  ReadState,
  Role,
  Snapshot,
} from './types.ts';
export { describeFaultTolerance, type FaultToleranceInput } from './fault-tolerance.ts';
export {
  defaultVoterPolicy,
  planVoterChange,
  type VoterCandidate,
  type VoterInput,
  type VoterPolicy,
} from './voters.ts';
