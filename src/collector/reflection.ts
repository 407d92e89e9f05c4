// Server reflection (so grpcurl needs no .proto file) describes the API from the .proto sources,
// which are read at start-up from the repository's proto/ directory (shipped next to dist/).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Server } from '@grpc/grpc-js';
import { loadSync, type PackageDefinition } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { protoPath as healthProto } from 'grpc-health-check';
import descriptor, { type IDescriptorProto, type IFileDescriptorProto } from 'protobufjs/ext/descriptor.js';

// A CommonJS module whose exports Node cannot name statically: only its default import works.
const { FileDescriptorProto } = descriptor;

/** src/collector or dist/collector -> the repository root's proto/. */
const PROTO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../proto');

function referencedTypes(message: IDescriptorProto): string[] {
  return [...(message.field ?? []).map((f) => f.typeName ?? ''), ...(message.nestedType ?? []).flatMap(referencedTypes)];
}

function definedTypes(prefix: string, message: IDescriptorProto): string[] {
  const name = `${prefix}.${message.name}`;
  return [name, ...(message.enumType ?? []).map((e) => `${name}.${e.name}`), ...(message.nestedType ?? []).flatMap((m) => definedTypes(name, m))];
}

/** protobufjs names a map field's entry type after the field ("Labels"); protoc's rule is "LabelsEntry". */
function nameMapEntries(prefix: string, message: IDescriptorProto): void {
  const name = `${prefix}.${message.name}`;
  for (const field of message.field ?? []) {
    const entry = message.nestedType?.find((n) => n.options?.mapEntry && n.name === field.typeName);
    if (!entry) continue;
    entry.name = `${(field.name ?? '').split('_').map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join('')}Entry`;
    field.typeName = `.${name}.${entry.name}`;
  }
  for (const nested of message.nestedType ?? []) nameMapEntries(name, nested);
}

/**
 * The descriptors protobufjs makes, as clients that build descriptors from reflection (grpcurl, Go's
 * protodesc) require them: protobufjs writes one file per package ("icmpwatch_v1.proto") that
 * imports nothing, so google.protobuf.Timestamp could not be resolved; each file gets the files
 * defining the types it refers to as dependencies. Map entry types get their standard names.
 */
function completeDescriptors(encoded: Uint8Array[]): Buffer[] {
  const files = encoded.map((b) => FileDescriptorProto.toObject(FileDescriptorProto.decode(b)) as IFileDescriptorProto);
  for (const file of files) for (const message of file.messageType ?? []) nameMapEntries(file.package ?? '', message);
  const fileOfType = new Map<string, IFileDescriptorProto>();
  for (const file of files) {
    const pkg = file.package ?? '';
    const names = [...(file.messageType ?? []).flatMap((m) => definedTypes(pkg, m)), ...(file.enumType ?? []).map((e) => `${pkg}.${e.name}`)];
    for (const name of names) fileOfType.set(name, file);
  }
  // A reference is absolute (".pkg.Type") or, as protobufjs writes them, relative to the package.
  const resolve = (ref: string, pkg: string): IFileDescriptorProto | undefined => {
    if (ref.startsWith('.')) return fileOfType.get(ref.slice(1));
    for (let scope = pkg; ; scope = scope.slice(0, Math.max(0, scope.lastIndexOf('.')))) {
      const file = fileOfType.get(scope ? `${scope}.${ref}` : ref);
      if (file || !scope) return file;
    }
  };
  for (const file of files) {
    const refs = [
      ...(file.messageType ?? []).flatMap(referencedTypes),
      ...(file.service ?? []).flatMap((s) => (s.method ?? []).flatMap((m) => [m.inputType ?? '', m.outputType ?? ''])),
    ];
    const deps = new Set(refs.filter(Boolean).map((ref) => resolve(ref, file.package ?? '')?.name));
    file.dependency = [...deps].filter((n): n is string => !!n && n !== file.name).sort();
  }
  return files.map((f) => Buffer.from(FileDescriptorProto.encode(FileDescriptorProto.fromObject(f)).finish()));
}

export function addReflection(server: Server): void {
  const definition: PackageDefinition = loadSync(['icmpwatch/v1/observer.proto', 'icmpwatch/v1/ingest.proto', healthProto], {
    includeDirs: [PROTO_DIR],
    keepCase: true, // the field names of the .proto files, as clients expect them
  });
  // Every message and enum entry carries the same list of files.
  const first = Object.values(definition).find((d) => 'fileDescriptorProtos' in d);
  const files = completeDescriptors((first?.fileDescriptorProtos as Buffer[] | undefined) ?? []);
  for (const d of Object.values(definition)) if ('fileDescriptorProtos' in d) d.fileDescriptorProtos = files;
  new ReflectionService(definition).addToServer(server);
}
