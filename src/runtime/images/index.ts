/**
 * Images without an engine: pull an image from a registry over its HTTP API, verify it by digest, unpack it
 * once per digest into a root filesystem, and collect what no task has used for a day. The public face of
 * src/runtime/images; drivers and the agent import only from here. Driver-agnostic: it hands back a
 * directory and how the image asks to be run, and runs nothing itself.
 */
export {
  ImageStore,
  imageUnusedMsDefault,
  layerDownloadsMaxDefault,
  pullProgressIntervalMs,
  type CollectReport,
  type ImageStoreInit,
  type PullOptions,
  type StoredImage,
} from './store.ts';
export {
  dockerHubApiHost,
  dockerHubRegistry,
  formatImageReference,
  parseImageReference,
  type ImageReference,
} from './reference.ts';
export { hostPlatform, type ImageRunConfig, type Platform } from './registry.ts';
