import { z } from 'zod';
import { parseFlags } from '../common/config.js';
import { DEFAULT_OBJECT, Probe, ProbeError, type HookAttempt } from '../agent/probe/probe.js';

export const summary = `icmpwatch probe: try the hooks on this kernel and report which one the agent would use

  -o text|json   output format (json: {"selected": HOOK, "hooks": [{hook, attached, reason}]})`;

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(
    argv.map((a) => (a === '-o' ? '--output' : a)),
    z.object({ output: z.enum(['text', 'json']).default('text'), bpfObject: z.string().default(DEFAULT_OBJECT) }),
  );
  let attempts: HookAttempt[];
  let selected: string | null = null;
  try {
    const probe = Probe.open({
      hook: 'auto',
      objectPath: flags.bpfObject,
      ringBytes: 1 << 16,
      eventsPerSecond: 0,
      wakeupBytes: 1 << 14,
      onLibbpfMessage: () => {},
    });
    attempts = probe.attempts;
    selected = probe.hook;
    probe.close();
  } catch (err) {
    if (!(err instanceof ProbeError)) throw err;
    attempts = err.attempts;
  }
  if (flags.output === 'json') {
    process.stdout.write(JSON.stringify({ selected, hooks: attempts }) + '\n');
  } else {
    for (const a of attempts) process.stdout.write(`${a.hook.padEnd(10)} ${a.attached ? 'ok' : `refused: ${a.reason}`}\n`);
    process.stdout.write(`selected: ${selected ?? 'none'}\n`);
  }
  return selected ? 0 : 1;
}
