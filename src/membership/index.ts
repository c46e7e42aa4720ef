export {
  defaultMembershipConfig,
  pushPullIntervalMs,
  retransmitLimit,
  suspicionTimeoutMs,
  suspicionTimeouts,
  type MembershipConfig,
} from './config.ts';
export { ed25519MembershipCrypto } from './crypto.ts';
export { HostedMembers, hostedProbeTimeoutMs, type HostedOutgoing, type HostedStats } from './hosted.ts';
export {
  swimMessageBytesMax,
  swimMessageSchema,
  swimProtocol,
  swimSyncProtocol,
  syncReplySchema,
  syncRequestSchema,
  type SwimMessage,
} from './messages.ts';
export { nodeRecordSchema, compareVersions, type NodeRecord, type Version } from './records.ts';
export {
  classifyDialFailure,
  describeDialFailure,
  describeWrongKey,
  handshakeFailingMsMax,
  joinDialTimeoutMs,
  type DialFailureKind,
} from './join.ts';
export { SwimTransport, type SwimTransportInit, type TransportStats } from './transport.ts';
export { MembershipService, type MembershipInit, type MembershipServiceStats } from './service.ts';
export {
  MembershipState,
  type Member,
  type MemberState,
  type MemberTransition,
  type MembershipStats,
} from './state.ts';
