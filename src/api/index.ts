export {
  ShoalClient,
  answerBytesMax,
  clientTimeoutMsDefault,
  httpsAddressPrefix,
  unixAddressPrefix,
  type ClientInit,
  type Delivery,
  type SendOptions,
} from './client.ts';
export { openApiDocument } from './openapi.ts';
export {
  SchedulerClient,
  SchedulerClientError,
  type SchedulerClientEvent,
  type SchedulerClientInit,
} from './scheduler-client.ts';
export { renderApiReference } from './reference.ts';
export {
  matchRoute,
  nextPageHeader,
  routePath,
  routes,
  tasksPageMax,
  type Answer,
  type Route,
  type RouteName,
  type TokenRequest,
} from './routes.ts';
export {
  requestBytesMax,
  startApiServer,
  tlsVersionMin,
  type ApiBackend,
  type ApiTlsIdentity,
  type TasksPage,
  type TasksPageRequest,
  apiTimeoutsDefault,
  type ApiServerInit,
  type ApiTimeouts,
  type ApiServers,
} from './server.ts';
export { eventFrameSchema } from './views.ts';
export {
  decodeSchedulerCall,
  encodeSchedulerEvent,
  streamIdHeader,
  type DecodedCall,
  type OfferJson,
  type SchedulerCallJson,
  type SchedulerEventJson,
  type TaskStatusJson,
} from './scheduler.ts';
export type {
  DeploymentView,
  FrameworkDetailView,
  FrameworkView,
  ErrorBody,
  EventFrame,
  HealthView,
  MemberView,
  ServiceView,
  StatusView,
  SubmitAnswer,
  TaskDetailView,
  TaskLogsView,
  TaskView,
  TokenView,
  NewTokenAnswer,
} from './views.ts';
