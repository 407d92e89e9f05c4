import { createRequire } from 'node:module';
import path from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import descriptor, { type IFileDescriptorProto } from 'protobufjs/ext/descriptor.js';
import { service as healthService } from 'grpc-health-check';
import type { Collector } from '../../src/collector/collector.js';
import { startCollector } from './harness.js';

interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] };
  fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
}

/** What grpcurl does: the reflection service's v1 stream, one request, one response. */
function reflect(address: string, request: Record<string, string>): Promise<ReflectionResponse> {
  const protoFile = path.join(
    path.dirname(createRequire(import.meta.url).resolve('@grpc/reflection/package.json')),
    'build/proto/grpc/reflection/v1/reflection.proto',
  );
  const pkg = grpc.loadPackageDefinition(loadSync(protoFile, { keepCase: false })) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
  };
  const client = new pkg.grpc.reflection.v1.ServerReflection(address, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    const call = client.serverReflectionInfo();
    call.on('data', (r: ReflectionResponse) => {
      resolve(r);
      call.end();
      client.close();
    });
    call.on('error', reject);
    call.write(request);
  });
}

const { FileDescriptorProto } = descriptor;
const decodeFile = (proto: Uint8Array) => FileDescriptorProto.toObject(FileDescriptorProto.decode(proto)) as IFileDescriptorProto;

describe('collector: health and reflection', () => {
  let collector: Collector;
  before(async () => {
    collector = await startCollector();
  });
  after(async () => collector.stop(1000));

  it('lists the services without the .proto files, and describes them', async () => {
    const list = await reflect(collector.address, { listServices: '' });
    expect(list.listServicesResponse!.service.map((s) => s.name)).to.include.members([
      'icmpwatch.v1.Observer',
      'icmpwatch.v1.Ingest',
      'grpc.health.v1.Health',
    ]);
    const described = await reflect(collector.address, { fileContainingSymbol: 'icmpwatch.v1.Observer' });
    const files = described.fileDescriptorResponse!.fileDescriptorProto.map((b) => b.toString('latin1'));
    expect(files.some((f) => f.includes('SubscribeRequest') && f.includes('Subscribe'))).to.equal(true);
  });

  it('serves descriptors grpcurl can build: imports (Event, google.protobuf.Timestamp) declared and served', async () => {
    const described = await reflect(collector.address, { fileContainingSymbol: 'icmpwatch.v1.Observer' });
    const files = described.fileDescriptorResponse!.fileDescriptorProto.map(decodeFile);
    const fileDefining = (pkg: string, message: string) => files.find((f) => f.package === pkg && f.messageType?.some((m) => m.name === message));
    const api = fileDefining('icmpwatch.v1', 'Event')!;
    const timestamp = fileDefining('google.protobuf', 'Timestamp')!;
    expect(api.dependency).to.include(timestamp.name);
    const observer = files.flatMap((f) => f.service ?? []).find((s) => s.name === 'Observer')!;
    const batches = observer.method!.find((m) => m.name === 'SubscribeBatches')!;
    expect([batches.inputType, batches.outputType, batches.serverStreaming]).to.deep.equal(['.icmpwatch.v1.SubscribeRequest', '.icmpwatch.v1.SubscribeBatch', true]);
    // Every import is served with the symbol's file and on its own by file name.
    for (const name of files.flatMap((f) => f.dependency ?? [])) {
      expect(files.map((f) => f.name)).to.include(name);
      const byName = await reflect(collector.address, { fileByFilename: name });
      expect(byName.fileDescriptorResponse!.fileDescriptorProto.map((b) => decodeFile(b).name)).to.include(name);
    }
    // The .proto field names, and map entries named as protoc names them.
    const endpoint = api.messageType!.find((m) => m.name === 'Endpoint')!;
    expect(endpoint.field!.map((f) => f.name)).to.include('pod_uid');
    expect(endpoint.field!.find((f) => f.name === 'labels')!.typeName).to.equal('.icmpwatch.v1.Endpoint.LabelsEntry');
    expect(endpoint.nestedType!.map((m) => m.name)).to.include('LabelsEntry');
  });

  it('answers grpc.health.v1 Check as SERVING', async () => {
    const Health = grpc.makeClientConstructor(healthService, 'grpc.health.v1.Health');
    const client = new Health(collector.address, grpc.credentials.createInsecure());
    const check = (service: string) =>
      new Promise<{ status: string }>((resolve, reject) =>
        client.check({ service }, (err: Error | null, res: { status: string }) => (err ? reject(err) : resolve(res))),
      );
    expect((await check('')).status).to.equal('SERVING');
    expect((await check('icmpwatch.v1.Observer')).status).to.equal('SERVING');
    client.close();
  });
});
