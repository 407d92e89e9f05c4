// Server reflection (so grpcurl needs no .proto file) describes the API from the .proto sources,
// which are read at start-up from the repository's proto/ directory (shipped next to dist/).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Server } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { protoPath as healthProto } from 'grpc-health-check';

/** src/collector or dist/collector -> the repository root's proto/. */
const PROTO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../proto');

export function addReflection(server: Server): void {
  const definition = loadSync(['icmpwatch/v1/observer.proto', 'icmpwatch/v1/ingest.proto', healthProto], {
    includeDirs: [PROTO_DIR],
  });
  new ReflectionService(definition).addToServer(server);
}
