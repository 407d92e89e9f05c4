import { Metadata, type ServiceError, type status } from '@grpc/grpc-js';

/** An error grpc-js turns into this status code and message. */
export function statusError(code: status, details: string): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new Metadata() });
}
