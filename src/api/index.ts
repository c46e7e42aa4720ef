export { ApiClient } from './client.ts';
export {
  replicasMax,
  requestBytesMax,
  startApiServer,
  taskIdPattern,
  type ApiBackend,
  type SubmitOptions,
} from './server.ts';
