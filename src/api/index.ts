export { ApiClient } from './client.ts';
export { requestBytesMax, startApiServer, type ApiBackend } from './server.ts';
