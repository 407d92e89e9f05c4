import type { google } from '../common/proto.js';

/** A protobuf Timestamp for milliseconds since the epoch (fractional part kept to the nanosecond). */
export function timestampFromMs(ms: number): google.protobuf.ITimestamp {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) % 1_000_000_000 };
}
