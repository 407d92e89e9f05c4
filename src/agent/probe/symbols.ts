/**
 * Finds what a static kernel function is called in /proc/kallsyms. gcc may clone and rename it
 * (`ip_rcv_core.isra.20` broke the seed's tracer), inline it away, or split it; no loader maps the
 * names by itself. The rules (shared/notes/kernel.md): full clones (`.isra.N`, `.constprop.N`,
 * `.llvm.N`) are valid entries for a return probe and all of them are attached; `.part.N` is not a
 * full entry and `.cold` never is; one name at several addresses is ambiguous and refused.
 */
export type SymbolResolution =
  | { status: 'found'; symbols: string[] }
  | { status: 'absent'; reason: string }
  | { status: 'refused'; reason: string };

export function resolveKernelSymbol(kallsyms: string, name: string): SymbolResolution {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const clone = new RegExp(`^${escaped}(\\.(isra|constprop|llvm)\\.[0-9a-f]+)*$`);
  const related = new RegExp(`^${escaped}\\.`);
  const addresses = new Map<string, Set<string>>();
  const partial: string[] = [];
  // One regex pass over the whole file (~120k lines): text symbols named `name` or `name.*`.
  const lines = new RegExp(`^([0-9a-f]+) [tT] (${escaped}(?:\\.\\S*)?)([ \\t]+\\[\\S+\\])?$`, 'gm');
  for (const [, addr, sym, module] of kallsyms.matchAll(lines)) {
    if (!addr || !sym || module) continue; // module symbols: not the core function
    if (clone.test(sym)) {
      if (!addresses.has(sym)) addresses.set(sym, new Set());
      addresses.get(sym)!.add(addr);
    } else if (related.test(sym) && !sym.includes('.cold')) {
      partial.push(sym);
    }
  }
  if (addresses.size === 0) {
    if (partial.length > 0) {
      return { status: 'refused', reason: `${name} exists only as a partial clone (${partial.join(', ')}): no full entry to probe` };
    }
    return { status: 'absent', reason: `${name} is not in /proc/kallsyms (inlined or not built into this kernel)` };
  }
  for (const [sym, addrs] of addresses) {
    if (addrs.size > 1) {
      return { status: 'refused', reason: `${sym} is at ${addrs.size} addresses in /proc/kallsyms: ambiguous, not guessing` };
    }
    if ([...addrs][0] === '0000000000000000') {
      return { status: 'refused', reason: '/proc/kallsyms hides addresses (kptr_restrict): cannot tell clones apart' };
    }
  }
  return { status: 'found', symbols: [...addresses.keys()].sort() };
}
