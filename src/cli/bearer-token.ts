// A subscriber's credentials: `authorization: Bearer <token>` metadata, the token read from
// --token-file on every connect (projected ServiceAccount tokens are rotated in place), else from
// $ICMPWATCH_TOKEN. Never sent over --insecure-plaintext: anyone on the path could read it, and a
// ServiceAccount token is a credential for the Kubernetes API.
import { readFileSync } from 'node:fs';
import { Metadata } from '@grpc/grpc-js';
import { UsageError } from '../common/config.js';

export const TOKEN_ENV = 'ICMPWATCH_TOKEN';

/**
 * Metadata with the token; empty when neither a file nor the variable gives one. A token and
 * --insecure-plaintext together are a UsageError naming where the token came from.
 */
export function bearerMetadata(
  { tokenFile, insecurePlaintext }: { tokenFile?: string | undefined; insecurePlaintext: boolean },
  env: NodeJS.ProcessEnv = process.env,
): Metadata {
  const metadata = new Metadata();
  let token: string | undefined;
  if (tokenFile) {
    refusePlaintext(insecurePlaintext, '--token-file');
    try {
      token = readFileSync(tokenFile, 'utf8').trim();
    } catch (err) {
      throw new UsageError(`--token-file: cannot read ${tokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (!token) throw new UsageError(`--token-file: ${tokenFile} is empty`);
  } else {
    token = env[TOKEN_ENV]?.trim() || undefined;
    if (token) refusePlaintext(insecurePlaintext, `$${TOKEN_ENV}`);
  }
  if (token) metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

function refusePlaintext(insecurePlaintext: boolean, source: string): void {
  if (insecurePlaintext) {
    throw new UsageError(`${source}: a bearer token is not sent with --insecure-plaintext (anyone on the path could read it): connect over TLS, or send no token`);
  }
}
