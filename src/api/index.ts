export { ApiClient } from './client.ts';
export {
  replicasMax,
  requestBytesMax,
  startApiServer,
  type ApiBackend,
  type SubmitOptions,
} from './server.ts';
