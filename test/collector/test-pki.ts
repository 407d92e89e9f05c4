// Certificates for the TLS tests, made with the openssl CLI in a temporary directory (removed by
// cleanup()): CAs, a collector server certificate for localhost/127.0.0.1 and client certificates.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface KeyPair {
  cert: string;
  key: string;
}

export interface Ca extends KeyPair {
  name: string;
}

const openssl = (dir: string, args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });

export class TestPki {
  readonly dir = mkdtempSync(join(tmpdir(), 'icmpwatch-pki-'));

  /** A self-signed CA. */
  ca(name: string): Ca {
    const cert = join(this.dir, `${name}.crt`);
    const key = join(this.dir, `${name}.key`);
    openssl(this.dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`]);
    return { name, cert, key };
  }

  /** A certificate signed by `ca`: a server one (DNS/IP names) or a client one (TLS client auth). */
  issue(ca: Ca, file: string, cn: string, use: 'server' | 'client'): KeyPair {
    const cert = join(this.dir, `${file}.crt`);
    const key = join(this.dir, `${file}.key`);
    const csr = join(this.dir, `${file}.csr`);
    const ext = join(this.dir, `${file}.ext`);
    writeFileSync(
      ext,
      [
        'basicConstraints=CA:FALSE',
        'keyUsage=critical,digitalSignature',
        `extendedKeyUsage=${use === 'server' ? 'serverAuth' : 'clientAuth'}`,
        ...(use === 'server' ? ['subjectAltName=DNS:localhost,DNS:icmpwatch-collector.test.svc,IP:127.0.0.1'] : []),
      ].join('\n'),
    );
    openssl(this.dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`]);
    openssl(this.dir, ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', String(Date.now()), '-days', '1', '-extfile', ext, '-out', cert]);
    return { cert, key };
  }

  /** Copies `from` to `to` the way the kubelet updates a Secret volume: each file replaced whole. */
  static replace(from: string, to: string): void {
    copyFileSync(from, `${to}.new`);
    renameSync(`${to}.new`, to);
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
