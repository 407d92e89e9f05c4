import { expect } from 'chai';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { EndpointsFileError, EndpointsFileResolver, parseEndpointsFile } from '../../../src/agent/enrich/endpoints-file.js';
import { icmpwatch } from '../../../src/common/proto.js';

const { Enrichment, EndpointKind } = icmpwatch.v1;

describe('endpoints file', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'icmpwatch-endpoints-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const write = (path: string, body: unknown) => writeFileSync(path, typeof body === 'string' ? body : JSON.stringify(body));

  it('names pods by IP, both families, IPv6 in the decoder\'s text form', () => {
    const t = parseEndpointsFile('f.json', JSON.stringify({
      endpoints: [
        { ip: '10.0.0.5', namespace: 'shop', pod: 'cart-1', labels: { app: 'cart' }, workload: { kind: 'Deployment', name: 'cart' } },
        { ip: 'FD00:0:0::0005', namespace: 'shop', pod: 'cart-1' },
      ],
    }));
    expect(t.get('10.0.0.5')).to.deep.include({ namespace: 'shop', pod: 'cart-1', labels: { app: 'cart' }, kind: EndpointKind.ENDPOINT_KIND_POD });
    expect(t.get('fd00::5')?.pod).to.equal('cart-1');
  });

  it('rejects a bad file with the JSON path of the bad field', () => {
    expect(() => parseEndpointsFile('f.json', '{"endpoints":[{"ip":"10.0.0.1","namespace":"a","pod":"b"},{"ip":"nope","namespace":"a","pod":"b"}]}'))
      .to.throw(EndpointsFileError, /f\.json: endpoints\.1\.ip: not an IP address/);
    expect(() => parseEndpointsFile('f.json', '{"endpoints":[{"ip":"10.0.0.1","pod":"b"}]}')).to.throw(/endpoints\.0\.namespace/);
    expect(() => parseEndpointsFile('f.json', '{"endpoints": [')).to.throw(/f\.json: invalid JSON/);
    expect(() => parseEndpointsFile('f.json', '{"endpointz": []}')).to.throw(/endpointz|endpoints/);
  });

  it('reloads on change (also when replaced by rename) and keeps the last good version on a bad one', async () => {
    const path = join(dir, 'endpoints.json');
    write(path, { endpoints: [{ ip: '10.0.0.1', namespace: 'a', pod: 'one' }] });
    const resolver = new EndpointsFileResolver(path, pino({ level: 'silent' }), 20);
    try {
      expect(resolver.resolve('10.0.0.1').pod).to.equal('one');
      expect(resolver.resolve('10.9.9.9')).to.deep.include({ ip: '10.9.9.9', enrichment: Enrichment.ENRICHMENT_UNKNOWN });
      const next = join(dir, 'next.json');
      write(next, { endpoints: [{ ip: '10.0.0.1', namespace: 'a', pod: 'two' }, { ip: '10.0.0.2', namespace: 'a', pod: 'three' }] });
      renameSync(next, path);
      await until(() => resolver.resolve('10.0.0.1').pod === 'two');
      expect(resolver.resolve('10.0.0.2').pod).to.equal('three');
      write(path, '{"endpoints": [{"ip": "10.0.0.1"}]}');
      await until(() => resolver.reloadFailures === 1);
      expect(resolver.resolve('10.0.0.1').pod).to.equal('two');
    } finally {
      resolver.close();
    }
  });
});

async function until(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}
