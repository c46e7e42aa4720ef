export {
  defaultMembershipConfig,
  pushPullIntervalMs,
  retransmitLimit,
  suspicionTimeoutMs,
  suspicionTimeouts,
  type MembershipConfig,
} from './config.ts';
export { swimProtocol, swimSyncProtocol } from './messages.ts';
export { nodeRecordSchema, compareVersions, type NodeRecord, type Version } from './records.ts';
export {
  classifyDialFailure,
  describeDialFailure,
  describeWrongKey,
  handshakeFailingMsMax,
  joinDialTimeoutMs,
  type DialFailureKind,
} from './join.ts';
export { MembershipService, type MembershipInit, type MembershipServiceStats } from './service.ts';
export {
  MembershipState,
  type Member,
  type MemberState,
  type MemberTransition,
  type MembershipStats,
} from './state.ts';
