import { z } from 'zod';

/** Bad flags or configuration: the CLI prints the message and exits 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

type RawValue = string | string[] | true;

const camel = (flag: string): string => flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
const kebab = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** A repeatable flag: absent -> [], once -> [v], several -> all of them. */
export const repeated = <T extends z.ZodType>(item: T) =>
  z.preprocess((v) => (v === undefined ? [] : Array.isArray(v) ? v : [v]), z.array(item));

/** A boolean flag given bare (`--follow`) or as `--follow=false`. */
export const flag = () =>
  z.preprocess((v) => (v === true || v === 'true' ? true : v === 'false' || v === undefined ? false : v), z.boolean());

/** host:port, with [v6] hosts. */
export const hostPort = () =>
  z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$/, 'expected HOST:PORT');

/** The message zod gives, with each issue named by its flag or field path. */
export function describeIssues(error: z.ZodError, name: (path: PropertyKey[]) => string): string {
  return error.issues.map((i) => `${name(i.path)}: ${i.message}`).join('; ');
}

/**
 * Parses `--name value`, `--name=value` and bare boolean flags against a zod object whose keys
 * are the camelCase flag names. Unknown flags and invalid values raise UsageError naming the flag.
 */
export function parseFlags<S extends z.ZodObject>(argv: string[], schema: S, booleans: string[] = []): z.infer<S> {
  const raw: Record<string, RawValue> = {};
  const known = new Set(Object.keys(schema.shape));
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new UsageError(`unexpected argument '${arg}'`);
    const name = m[1]!;
    const key = camel(name);
    if (!known.has(key)) throw new UsageError(`unknown flag --${name}`);
    let value: string | true;
    if (m[2] !== undefined) value = m[2];
    else if (booleans.includes(key)) value = true;
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new UsageError(`--${name}: needs a value`);
      value = next;
      i++;
    }
    const prev = raw[key];
    raw[key] = prev === undefined ? value : ([] as string[]).concat(prev as string | string[], value as string);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    throw new UsageError(describeIssues(parsed.error, (p) => `--${kebab(String(p[0] ?? ''))}`));
  }
  return parsed.data;
}
