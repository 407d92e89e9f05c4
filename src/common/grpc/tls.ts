// TLS for the gRPC servers and clients from PEM files that are re-read while the process runs, so a
// rotated certificate (a renewed Kubernetes Secret, which the kubelet swaps atomically) is used
// without a restart. grpc-js's FileWatcherCertificateProvider re-reads the files every refresh
// interval; each new connection (a TLS handshake) uses what was read last. Established connections
// keep the certificates they were opened with: their streams go on until they end or reconnect.
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../log.js';

/** How often certificate files are re-read. */
export const TLS_REFRESH_MS = 10_000;

export interface TlsFiles {
  /** PEM certificate (chain) this process presents, and its private key; null: none. */
  certFile: string | null;
  keyFile: string | null;
  /** PEM CA bundle the peer's certificate must chain to; null: none (a client then trusts the system roots). */
  caFile: string | null;
}

/** A file that cannot be used; `field` names the TlsFiles field, for a message naming its flag. */
export class TlsFilesError extends Error {
  override name = 'TlsFilesError';
  constructor(
    readonly field: keyof TlsFiles,
    message: string,
  ) {
    super(message);
  }
}

interface Pem {
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
}

/** Throws what OpenSSL says about the set (unparsable PEM, a key that is not the certificate's). */
function checkPem(pem: Pem): void {
  createSecureContext(pem);
}

/** Reads and checks the files once, naming the one at fault. */
function readAndCheck(files: TlsFiles): void {
  const pem: Pem = {};
  for (const [field, key] of [['certFile', 'cert'], ['keyFile', 'key'], ['caFile', 'ca']] as const) {
    const path = files[field];
    if (path === null) continue;
    try {
      pem[key] = readFileSync(path);
    } catch (err) {
      throw new TlsFilesError(field, `cannot read ${path}: ${(err as Error).message}`);
    }
    try {
      checkPem({ [key]: pem[key] });
    } catch (err) {
      throw new TlsFilesError(field, `${path}: ${(err as Error).message}`);
    }
  }
  try {
    checkPem(pem);
  } catch (err) {
    throw new TlsFilesError('keyFile', `${files.keyFile} does not go with ${files.certFile}: ${(err as Error).message}`);
  }
}

/**
 * PEM files watched for rotation. The files are checked when opened (TlsFilesError); later
 * changes are logged, and a broken replacement is logged as an error (new connections then fail
 * until the files are fixed; established ones go on).
 */
export class WatchedTlsFiles {
  private readonly provider: grpc.experimental.FileWatcherCertificateProvider;
  private last: Pem = {};
  /** Set once the first read is in: later differences are rotations. */
  private opened = false;
  private readonly onIdentity = (u: grpc.experimental.IdentityCertificateUpdate | null) =>
    this.changed({ ...this.last, cert: u?.certificate, key: u?.privateKey });
  private readonly onCa = (u: grpc.experimental.CaCertificateUpdate | null) => this.changed({ ...this.last, ca: u?.caCertificate });

  private constructor(
    readonly files: TlsFiles,
    private readonly log: Logger,
    refreshMs: number,
  ) {
    this.provider = new grpc.experimental.FileWatcherCertificateProvider({
      certificateFile: files.certFile ?? undefined,
      privateKeyFile: files.keyFile ?? undefined,
      caCertificateFile: files.caFile ?? undefined,
      refreshIntervalMs: refreshMs,
    });
  }

  /** Checks the files, then watches them; resolves once the provider has read them. */
  static async open(files: TlsFiles, log: Logger, refreshMs = TLS_REFRESH_MS): Promise<WatchedTlsFiles> {
    if ((files.certFile === null) !== (files.keyFile === null)) {
      throw new TlsFilesError(files.certFile === null ? 'certFile' : 'keyFile', 'a certificate and its key go together');
    }
    readAndCheck(files);
    const watched = new WatchedTlsFiles(files, log, refreshMs);
    // Listening keeps the provider reading; the first read is then ready before a server binds or
    // a client dials (grpc-js drops connections that arrive before it).
    await new Promise<void>((resolve) => {
      const first = () => {
        watched.provider.removeCaCertificateListener(first);
        watched.provider.removeIdentityCertificateListener(first);
        resolve();
      };
      if (files.certFile) watched.provider.addIdentityCertificateListener(first);
      else watched.provider.addCaCertificateListener(first);
      if (files.certFile) watched.provider.addIdentityCertificateListener(watched.onIdentity);
      if (files.caFile) watched.provider.addCaCertificateListener(watched.onCa);
    });
    watched.opened = true;
    return watched;
  }

  /**
   * Server credentials presenting the certificate. With `requestClientCertificate`, clients are asked
   * for a certificate and it is verified against the CA, but the handshake does not require one:
   * the service decides (see src/collector/agent-identity.ts), so that a refused client gets a gRPC
   * status it can log and the server counts it, instead of an anonymous handshake failure.
   */
  serverCredentials(requestClientCertificate: boolean): grpc.ServerCredentials {
    if (!this.files.certFile) throw new Error('server credentials need a certificate');
    // grpc-js 1.14 names these parameters (ca, identity) but uses them as (identity, ca | null):
    // the CA provider, when given, makes the server request client certificates.
    return grpc.experimental.createCertificateProviderServerCredentials(this.provider, requestClientCertificate ? this.provider : null, false);
  }

  /** Client credentials verifying the server against the CA file, presenting the certificate if there is one. */
  channelCredentials(): grpc.ChannelCredentials {
    if (!this.files.caFile) throw new Error('watched client credentials need a CA file');
    return grpc.experimental.createCertificateProviderChannelCredentials(this.provider, this.files.certFile ? this.provider : null);
  }

  /** Stops this object's own watching (the credentials stop theirs when their servers and channels close). */
  close(): void {
    this.provider.removeIdentityCertificateListener(this.onIdentity);
    this.provider.removeCaCertificateListener(this.onCa);
  }

  private changed(next: Pem): void {
    const same = (a: Buffer | undefined, b: Buffer | undefined) => (a && b ? a.equals(b) : a === b);
    if (same(next.cert, this.last.cert) && same(next.key, this.last.key) && same(next.ca, this.last.ca)) return;
    this.last = next;
    if (!this.opened) return;
    const missing = (this.files.certFile && (!next.cert || !next.key)) || (this.files.caFile && !next.ca);
    try {
      if (missing) throw new Error('a file could not be read');
      checkPem(next);
      this.log.info({ ...this.files }, 'TLS files changed: new connections use them');
    } catch (err) {
      this.log.error({ ...this.files, err: (err as Error).message }, 'TLS files changed and cannot be used: new connections fail until they are fixed');
    }
  }
}

/** How a client reaches the collector. */
export interface ClientTransport {
  credentials: grpc.ChannelCredentials;
  /** The name the server's certificate must carry when it is not the address's host. */
  serverName: string | null;
}

export const plaintextTransport = (): ClientTransport => ({ credentials: grpc.credentials.createInsecure(), serverName: null });

/** The channel options a transport needs. */
export function transportOptions(transport: ClientTransport): grpc.ChannelOptions {
  return transport.serverName ? { 'grpc.ssl_target_name_override': transport.serverName, 'grpc.default_authority': transport.serverName } : {};
}

/** One-connection clients (observe, status): the CA is read once; without one, the system roots. */
export function staticClientTransport(caFile: string | null, serverName: string | null): ClientTransport {
  let ca: Buffer | null = null;
  if (caFile) {
    try {
      ca = readFileSync(caFile);
      checkPem({ ca });
    } catch (err) {
      throw new TlsFilesError('caFile', `${caFile}: ${(err as Error).message}`);
    }
  }
  return { credentials: grpc.credentials.createSsl(ca), serverName };
}
