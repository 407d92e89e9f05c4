import { z } from 'zod';

const UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "500ms", "90s", "15m", "2h", "1d", "1h30m" -> milliseconds; null when not a duration. */
export function parseDurationMs(text: string): number | null {
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(text)) return null;
  let ms = 0;
  for (const [, value, , unit] of text.matchAll(/(\d+(\.\d+)?)(ms|s|m|h|d)/g)) ms += Number(value) * UNITS_MS[unit!]!;
  return ms;
}

/** A flag holding a duration, parsed to milliseconds. */
export const duration = () =>
  z.string().transform((text, ctx) => {
    const ms = parseDurationMs(text);
    if (ms === null) ctx.addIssue(`expected a duration such as 90s, 15m, 2h or 1d, got '${text}'`);
    return ms ?? 0;
  });
