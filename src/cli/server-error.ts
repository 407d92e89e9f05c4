import { status, type ServiceError } from '@grpc/grpc-js';

/** "UNAVAILABLE: No connection established", the status code by name, then the server's message. */
export function describeServerError(err: unknown): string {
  const e = err as Partial<ServiceError>;
  if (typeof e.code === 'number') return `${status[e.code] ?? e.code}: ${e.details ?? e.message ?? ''}`;
  return err instanceof Error ? err.message : String(err);
}

/** Exit status when the collector refused the caller's credentials or rights (1: other server errors). */
export const ACCESS_REFUSED_EXIT = 3;

/** The exit status for a failed call, and what to print: refusals say what to do about them. */
export function serverFailure(err: unknown): { exitCode: number; message: string } {
  const code = (err as Partial<ServiceError>).code;
  const message = describeServerError(err);
  if (code === status.UNAUTHENTICATED) {
    return { exitCode: ACCESS_REFUSED_EXIT, message: `${message}\n  (give a token the cluster accepts: --token-file FILE or $ICMPWATCH_TOKEN)` };
  }
  if (code === status.PERMISSION_DENIED) {
    return { exitCode: ACCESS_REFUSED_EXIT, message: `${message}\n  (a cluster admin can bind the chart's icmpwatch viewer ClusterRoles to you; see the README's "Access control")` };
  }
  return { exitCode: 1, message };
}
