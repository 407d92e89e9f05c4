// The C header is the one definition of the record; this proves the decoder reads its layout.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGG_KEY, AGG_VALUE, CONTROL, COUNTER_FAMILIES, COUNTERS, EVENT_FIELDS, EVENT_SIZE, FLAG_BITS, HOOK_IDS } from '../../../src/agent/probe/event-layout.js';

const BPF_DIR = fileURLToPath(new URL('../../../bpf/', import.meta.url));

/** Compiles a program printing offsetof/sizeof of the given members as JSON. */
function layoutOf(struct: string, members: string[], extra = ''): Record<string, [number, number]> & { size: [number, number] } {
  const dir = mkdtempSync(join(tmpdir(), 'icmpwatch-layout-'));
  try {
    const lines = members.map(
      (m) => `printf("\\"%s\\":[%zu,%zu],", "${m}", offsetof(struct ${struct}, ${m}), sizeof(((struct ${struct} *)0)->${m}));`,
    );
    writeFileSync(
      join(dir, 'layout.c'),
      `#include <linux/types.h>\n#include <stddef.h>\n#include <stdio.h>\n#include "icmpwatch.h"\nint main(void) {\nprintf("{");\n${lines.join('\n')}\n${extra}printf("\\"size\\":[0,%zu]}", sizeof(struct ${struct}));\nreturn 0;\n}\n`,
    );
    execFileSync('cc', ['-I', BPF_DIR, '-o', join(dir, 'layout'), join(dir, 'layout.c')]);
    return JSON.parse(execFileSync(join(dir, 'layout')).toString());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('event record layout (bpf/icmpwatch.h vs the TypeScript decoder)', () => {
  it('has every field of struct icmpw_event at the offset and size the decoder reads', () => {
    const c = layoutOf('icmpw_event', Object.keys(EVENT_FIELDS));
    for (const [name, f] of Object.entries(EVENT_FIELDS)) {
      expect(c[name], name).to.deep.equal([f.offset, f.size]);
    }
    expect(c.size[1]).to.equal(EVENT_SIZE);
  });

  it('agrees on the control word and the flood aggregation map', () => {
    const ctl = layoutOf('icmpw_control', ['events_per_second', 'wakeup_bytes', 'agg_slot', 'identity_seed']);
    expect([ctl.events_per_second![0], ctl.wakeup_bytes![0], ctl.agg_slot![0], ctl.identity_seed![0], ctl.size[1]]).to.deep.equal([
      CONTROL.eventsPerSecond,
      CONTROL.wakeupBytes,
      CONTROL.aggSlot,
      CONTROL.identitySeed,
      CONTROL.size,
    ]);
    const key = layoutOf('icmpw_agg_key', ['family', 'type', 'code', 'saddr', 'daddr']);
    expect([key.family![0], key.type![0], key.code![0], key.saddr![0], key.daddr![0], key.size[1]]).to.deep.equal([
      AGG_KEY.family,
      AGG_KEY.type,
      AGG_KEY.code,
      AGG_KEY.saddr,
      AGG_KEY.daddr,
      AGG_KEY.size,
    ]);
    const value = layoutOf('icmpw_agg_value', ['packets', 'first_ns', 'last_ns', 'sightings']);
    expect([value.packets![0], value.first_ns![0], value.last_ns![0], value.sightings![0], value.size[1]]).to.deep.equal([
      AGG_VALUE.packets,
      AGG_VALUE.firstNs,
      AGG_VALUE.lastNs,
      AGG_VALUE.sightings,
      AGG_VALUE.size,
    ]);
  });

  it('indexes the per-CPU counters as enum icmpw_counter and enum icmpw_counter_family do', () => {
    const names = COUNTERS.map((n) => `ICMPW_C_${n.replace(/[A-Z]/g, (ch) => `_${ch}`).toUpperCase()}`);
    const rows = COUNTER_FAMILIES.map((f) => `ICMPW_CF_${f.toUpperCase()}`);
    const constants = [...names, ...rows, 'ICMPW_C_MAX', 'ICMPW_CF_MAX'];
    const c = layoutOf('icmpw_control', [], constants.map((n) => `printf("\\"${n}\\":[%d,0],", ${n});`).join('\n'));
    names.forEach((n, i) => expect(c[n]![0], n).to.equal(i));
    rows.forEach((n, i) => expect(c[n]![0], n).to.equal(i));
    expect(c.ICMPW_C_MAX![0]).to.equal(COUNTERS.length);
    expect(c.ICMPW_CF_MAX![0]).to.equal(COUNTER_FAMILIES.length);
    // The map holds one row per family; the agent reads key row * ICMPW_C_MAX + counter.
    expect(readFileSync(join(BPF_DIR, 'icmpwatch.bpf.c'), 'utf8')).to.match(/__uint\(max_entries, ICMPW_CF_MAX \* ICMPW_C_MAX\);[^}]*\} counters SEC/);
  });

  /** The enumerators of `enum NAME` as the header spells them, with the values the compiler gives them. */
  function enumOf(name: string): Record<string, number> {
    const body = new RegExp(`enum ${name} \\{([^}]*)\\}`).exec(readFileSync(join(BPF_DIR, 'icmpwatch.h'), 'utf8'));
    expect(body, `enum ${name} in icmpwatch.h`).to.not.equal(null);
    const names = [...body![1]!.matchAll(/^\s*(ICMPW_\w+)\s*=/gm)].map((m) => m[1]!);
    const c = layoutOf('icmpw_control', [], names.map((n) => `printf("\\"${n}\\":[%d,0],", (int)${n});`).join('\n'));
    return Object.fromEntries(names.map((n) => [n, c[n]![0]]));
  }

  it('names the same flags with the same bits as enum icmpw_flag', () => {
    const c = enumOf('icmpw_flag');
    const ts = Object.fromEntries(Object.entries(FLAG_BITS).map(([k, v]) => [`ICMPW_F_${k.toUpperCase().replace(/-/g, '_')}`, v]));
    expect(c).to.deep.equal(ts);
    expect(Object.keys(c)).to.include('ICMPW_F_VLAN_UNSUPPORTED');
  });

  it('numbers the hooks as enum icmpw_hook does', () => {
    const c = enumOf('icmpw_hook');
    const ts = Object.fromEntries(Object.entries(HOOK_IDS).map(([k, v]) => [`ICMPW_HOOK_${k.toUpperCase()}`, v]));
    expect(c).to.deep.equal(ts);
  });
});
