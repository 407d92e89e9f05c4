// A subscriber's credentials: `authorization: Bearer <token>` metadata, the token read from
// --token-file on every connect (projected ServiceAccount tokens are rotated in place), else from
// $ICMPWATCH_TOKEN.
import { readFileSync } from 'node:fs';
import { Metadata } from '@grpc/grpc-js';
import { UsageError } from '../common/config.js';

export const TOKEN_ENV = 'ICMPWATCH_TOKEN';

/** Metadata with the token; empty when neither a file nor the variable gives one. */
export function bearerMetadata(tokenFile: string | undefined, env: NodeJS.ProcessEnv = process.env): Metadata {
  const metadata = new Metadata();
  let token: string | undefined;
  if (tokenFile) {
    try {
      token = readFileSync(tokenFile, 'utf8').trim();
    } catch (err) {
      throw new UsageError(`--token-file: cannot read ${tokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (!token) throw new UsageError(`--token-file: ${tokenFile} is empty`);
  } else {
    token = env[TOKEN_ENV]?.trim() || undefined;
  }
  if (token) metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}
