import { expect } from 'chai';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { EndpointsFileError, EndpointsFileResolver, MAX_ENDPOINTS_FILE_BYTES, parseEndpointsFile } from '../../../src/agent/enrich/endpoints-file.js';
import { icmpwatch } from '../../../src/common/proto.js';
import { fuzzSeed, Random, reportSeedOnFailure } from '../../fuzz.js';

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

  it('refuses a file beyond the size bound without reading it, at start and on reload (keeping the last good version)', async () => {
    const path = join(dir, 'endpoints.json');
    // Valid JSON of the bound's size plus one byte: refused by its size, not its content.
    const huge = (bytes: number) => `{"endpoints": []${' '.repeat(bytes - '{"endpoints": []}'.length)}}`;
    write(path, huge(MAX_ENDPOINTS_FILE_BYTES + 1));
    expect(() => new EndpointsFileResolver(path, pino({ level: 'silent' }), 20)).to.throw(
      EndpointsFileError,
      `${path}: ${MAX_ENDPOINTS_FILE_BYTES + 1} bytes, more than the limit of ${MAX_ENDPOINTS_FILE_BYTES} bytes`,
    );
    write(path, { endpoints: [{ ip: '10.0.0.1', namespace: 'a', pod: 'one' }] });
    const resolver = new EndpointsFileResolver(path, pino({ level: 'silent' }), 20);
    try {
      write(path, huge(MAX_ENDPOINTS_FILE_BYTES + 1));
      await until(() => resolver.reloadFailures === 1);
      expect(resolver.resolve('10.0.0.1').pod).to.equal('one');
      // Exactly at the bound is read.
      write(path, huge(MAX_ENDPOINTS_FILE_BYTES));
      await until(() => resolver.reloads === 1);
      expect(resolver.resolve('10.0.0.1').enrichment).to.equal(Enrichment.ENRICHMENT_UNKNOWN);
    } finally {
      resolver.close();
    }
  });
});

describe('endpoints file: hostile documents (fuzz)', () => {
  const seed = fuzzSeed(0xe9d7);
  const r = new Random(seed);
  afterEach(function () {
    reportSeedOnFailure(this, seed);
  });

  const awkwardStrings = ['10.0.0.1', 'fd00::1', 'FE80::1%eth0', '::ffff:10.0.0.1', '10.0.0.256', '\ud800', 'a\udfff', '__proto__', 'constructor', ''];

  /** Any JSON value, nested a few levels; strings often ones that parsers trip on. */
  function randomJson(depth: number): unknown {
    switch (r.int(depth > 0 ? 7 : 5)) {
      case 0:
        return null;
      case 1:
        return r.chance(0.5);
      case 2:
        return r.pick([r.extremeInt(), 1.5, -0, 1e308]);
      case 3:
        return r.pick(awkwardStrings);
      case 4:
        return r.string();
      case 5:
        return Array.from({ length: r.int(4) }, () => randomJson(depth - 1));
      default:
        return Object.fromEntries(Array.from({ length: r.int(4) }, () => [r.chance(0.5) ? r.pick(awkwardStrings) : r.string(8), randomJson(depth - 1)]));
    }
  }

  function validEntry(): Record<string, unknown> {
    return {
      ip: r.pick(['10.0.0.1', 'fd00::1', '192.168.1.200', '2001:db8::abcd']),
      namespace: 'shop',
      pod: `cart-${r.int(100)}`,
      labels: { app: 'cart' },
      node: 'node-a',
      workload: { kind: 'Deployment', name: 'cart' },
    };
  }

  /** A valid document with a few fields replaced, removed or added: near misses, mostly. */
  function mutatedDocument(): unknown {
    const entries = Array.from({ length: 1 + r.int(4) }, validEntry);
    for (let edits = r.int(4); edits > 0; edits--) {
      const entry = r.pick(entries);
      const key = r.pick([...Object.keys(entry), 'extra', '__proto__']);
      if (r.chance(0.3)) delete entry[key];
      else if (key === 'labels' || key === 'workload') entry[key] = r.chance(0.5) ? randomJson(2) : { [r.pick(awkwardStrings)]: randomJson(1) };
      else entry[key] = r.chance(0.6) ? r.pick(awkwardStrings) : randomJson(2);
    }
    return r.chance(0.9) ? { endpoints: entries } : r.pick([entries, { endpoints: entries, extra: 1 }, randomJson(3)]);
  }

  it('yields a table of valid endpoints or an EndpointsFileError naming the file, never another exception', () => {
    let tables = 0;
    let refusals = 0;
    for (let i = 0; i < 3000; i++) {
      const text = JSON.stringify(mutatedDocument());
      // Now and then the text itself is damaged: cut, bytes changed, garbage inserted.
      const input = r.chance(0.2) ? r.mutate(Buffer.from(text)).toString('utf8') : text;
      let table: Map<string, icmpwatch.v1.IEndpoint>;
      try {
        table = parseEndpointsFile('hostile.json', input);
      } catch (err) {
        expect(err, `${input}: ${(err as Error).stack}`).to.be.instanceOf(EndpointsFileError);
        expect((err as Error).message, input).to.match(/^hostile\.json: \S/);
        refusals++;
        continue;
      }
      tables++;
      for (const [ip, endpoint] of table) {
        expect(endpoint.ip, input).to.equal(ip);
        // Every endpoint must survive the trip to the collector: encodable and decodable protobuf.
        const bytes = icmpwatch.v1.Endpoint.encode(endpoint).finish();
        expect(icmpwatch.v1.Endpoint.toObject(icmpwatch.v1.Endpoint.decode(bytes)).pod, input).to.equal(endpoint.pod);
      }
    }
    // Both outcomes were exercised by the run above.
    expect(tables).to.be.greaterThan(100);
    expect(refusals).to.be.greaterThan(100);
  });
});

async function until(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}
