// The generated messages, with 64-bit integers as JS numbers. The generated code is built with
// --force-number, so its types say number, but the protobufjs runtime decodes Long objects while the
// `long` package is installed, and the generated prototypes carry Long zero defaults. Both are put
// right here, whichever module evaluated the generated code first. Import messages from this module.
import $protobuf from 'protobufjs/minimal.js';
import { google, icmpwatch } from './proto/icmpwatch.js';

$protobuf.util.Long = undefined as unknown as typeof $protobuf.util.Long;
$protobuf.configure();

const isLong = (v: unknown) => typeof v === 'object' && v !== null && 'low' in v && 'high' in v && 'unsigned' in v;

/** Replaces the Long defaults on every generated message prototype with 0. */
function zeroLongDefaults(namespace: Record<string, unknown>, seen: Set<unknown>): void {
  for (const value of Object.values(namespace)) {
    if ((typeof value !== 'object' && typeof value !== 'function') || value === null || seen.has(value)) continue;
    seen.add(value);
    if (typeof value === 'function') {
      const proto = value.prototype as Record<string, unknown> | undefined;
      for (const key of Object.keys(proto ?? {})) if (isLong(proto![key])) proto![key] = 0;
    }
    zeroLongDefaults(value as Record<string, unknown>, seen);
  }
}
zeroLongDefaults({ google, icmpwatch }, new Set());

export { google, icmpwatch };
