export {
  MembershipService,
  defaultMembershipConfig,
  describeDialFailure,
  membershipSyncProtocol,
  membershipTopic,
  type MembershipConfig,
  type MembershipInit,
} from './service.ts';
export {
  MembershipState,
  isNewer,
  nodeRecordSchema,
  type Member,
  type MemberState,
  type MemberTransition,
  type MembershipTimings,
  type NodeRecord,
} from './state.ts';
