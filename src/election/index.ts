export { RaftCore, parseConfig, type RaftInit } from './raft.ts';
export { RaftService, defaultRaftTimings, type RaftServiceInit, type RaftTimings } from './service.ts';
export { Libp2pRaftTransport, raftProtocol, type RaftTransport } from './transport.ts';
export { Wal, walFileName } from './wal.ts';
export type { ClusterConfig, HardState, LogEntry, NodeId, RaftMessage, RaftStatus, Role } from './types.ts';
