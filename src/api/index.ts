export {
  ShoalClient,
  answerBytesMax,
  clientTimeoutMsDefault,
  unixAddressPrefix,
  type ClientInit,
  type Delivery,
  type SendOptions,
} from './client.ts';
export { openApiDocument } from './openapi.ts';
export { renderApiReference } from './reference.ts';
export {
  matchRoute,
  routePath,
  routes,
  type Answer,
  type Route,
  type RouteName,
  type TokenRequest,
} from './routes.ts';
export {
  requestBytesMax,
  startApiServer,
  type ApiBackend,
  type ApiServerInit,
  type ApiServers,
} from './server.ts';
export type {
  ErrorBody,
  HealthView,
  MemberView,
  StatusView,
  SubmitAnswer,
  TaskDetailView,
  TaskLogsView,
  TaskView,
  TokenView,
  NewTokenAnswer,
} from './views.ts';
