/**
 * What `shoal logs -f` streams, between nodes (/shoal/logs/1.0.0) and from the API to the CLI (one JSON frame
 * per line). Output bytes travel as base64 so any bytes pass.
 */
export type LogFrame =
  | { readonly stream: 'stdout' | 'stderr'; readonly data: Buffer }
  | { readonly end: string }
  | { readonly heartbeat: true };

export type LogFrameJson =
  | { readonly stream: 'stdout' | 'stderr'; readonly data: string }
  | { readonly end: string }
  | { readonly heartbeat: true }
  | { readonly error: { readonly code: string; readonly message: string } };

export function frameToJson(frame: LogFrame): LogFrameJson {
  return 'data' in frame ? { stream: frame.stream, data: frame.data.toString('base64') } : frame;
}
