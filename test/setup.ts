// Shared by every test file: the prerequisite rule. Outside CI a missing prerequisite skips the
// test with its reason; under CI=true it fails, so a broken machine never looks green.
import type { Context } from 'mocha';

export function requirePrerequisite(ctx: Context, ok: boolean, what: string): void {
  if (ok) return;
  if (process.env.CI === 'true') throw new Error(`prerequisite missing under CI: ${what}`);
  ctx.skip();
}

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
