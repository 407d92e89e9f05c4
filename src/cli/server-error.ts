import { status, type ServiceError } from '@grpc/grpc-js';

/** "UNAVAILABLE: No connection established", the status code by name, then the server's message. */
export function describeServerError(err: unknown): string {
  const e = err as Partial<ServiceError>;
  if (typeof e.code === 'number') return `${status[e.code] ?? e.code}: ${e.details ?? e.message ?? ''}`;
  return err instanceof Error ? err.message : String(err);
}
