// The generated code is built with --force-number, so its types say 64-bit fields are numbers; the
// protobufjs runtime would still decode them as Long objects while the `long` package is installed.
// Unsetting Long makes the runtime agree with the types. Must run before the generated module is
// evaluated (it bakes Long defaults into prototypes): import it through ./proto.ts only.
import $protobuf from 'protobufjs/minimal.js';

$protobuf.util.Long = undefined as unknown as typeof $protobuf.util.Long;
$protobuf.configure();
