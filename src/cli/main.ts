#!/usr/bin/env node
import { UsageError } from '../common/config.js';

interface Command {
  summary: string;
  run(argv: string[]): Promise<number>;
}

/** Loaded lazily so each subcommand pays only for what it imports. */
const commands: Record<string, () => Promise<Command>> = {
  agent: () => import('./agent.js'),
  probe: () => import('./probe.js'),
  demo: () => import('./demo.js'),
  collector: () => import('./collector.js'),
  observe: () => import('./observe.js'),
  status: () => import('./status.js'),
};

function usage(): string {
  return [
    'usage: icmpwatch <command> [flags]',
    '',
    'commands:',
    ...Object.keys(commands).map((c) => `  ${c}`),
    '',
    'Run `icmpwatch <command> --help` for its flags.',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name ? 0 : 2;
  }
  const load = commands[name];
  if (!load) {
    process.stderr.write(`icmpwatch: unknown command '${name}'\n${usage()}\n`);
    return 2;
  }
  const command = await load();
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(command.summary + '\n');
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`icmpwatch ${name}: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`icmpwatch: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
