#!/usr/bin/env node
// The `rargen` command. A thin dispatcher: `rargen <command> [args]` imports
// ./commands/<command>.js and calls its run(argv). Adding a command is adding a file
// lib/commands/<name>.ts that exports `summary` and `run`; `rargen --help` lists the
// folder, so nothing here changes. Errors print one line without a stack (set
// RARGEN_DEBUG=1 for it) and exit 1, or 2 for usage errors.
import { readdirSync, readFileSync, existsSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { UsageError } from './commands/_shared.js';
import { ValidationError } from './errors.js';
import { packageRoot } from './native.js';

/** What a command module exports. */
export interface CommandModule {
  /** One line for `rargen --help`. */
  summary: string;
  /** Runs the command on its arguments (after the command name); resolves to the exit code. */
  run(argv: string[]): Promise<number>;
}

const COMMAND_NAME = /^[a-z][a-z-]*$/;
const commandsDir = fileURLToPath(new URL('./commands/', import.meta.url));

function commandFile(name: string): string | undefined {
  for (const ext of ['.js', '.ts']) {
    const f = join(commandsDir, name + ext);
    if (existsSync(f)) return f;
  }
  return undefined;
}

/** The command names found in the commands folder, sorted. */
export function listCommands(): string[] {
  let files: string[] = [];
  try {
    files = readdirSync(commandsDir);
  } catch {
    return [];
  }
  const names = new Set<string>();
  for (const f of files) {
    const m = /^(.+)\.(js|ts)$/.exec(f);
    if (m && !f.endsWith('.d.ts') && COMMAND_NAME.test(m[1]!)) names.add(m[1]!);
  }
  return [...names].sort();
}

async function loadCommand(name: string): Promise<CommandModule> {
  const file = commandFile(name);
  if (!file) throw new UsageError(`unknown command ${JSON.stringify(name)} (commands: ${listCommands().join(', ')})`);
  const mod = (await import(pathToFileURL(file).href)) as Partial<CommandModule>;
  if (typeof mod.run !== 'function') throw new Error(`command module ${file} does not export run(argv)`);
  return { summary: typeof mod.summary === 'string' ? mod.summary : '', run: mod.run };
}

export function version(): string {
  return JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version as string;
}

async function usage(): Promise<string> {
  const names = listCommands();
  const rows: string[] = [];
  const width = Math.max(8, ...names.map((n) => n.length));
  for (const n of names) {
    let summary = '';
    try {
      summary = (await loadCommand(n)).summary;
    } catch {
      summary = '(could not be loaded)';
    }
    rows.push(`  ${n.padEnd(width)}  ${summary}`);
  }
  return [
    'Usage: rargen <command> [options]',
    '',
    'RAR (Randomized AutoRegressive) image generation with the released checkpoints.',
    '',
    'Commands:',
    ...rows,
    '',
    'Options:',
    '  -h, --help     show this help (rargen <command> --help for a command)',
    '  -v, --version  print the version',
  ].join('\n');
}

/** Runs the CLI on argv (without node and the script); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
      if (cmd === 'help' && rest[0]) return await main([rest[0], '--help']);
      process.stdout.write((await usage()) + '\n');
      return cmd === undefined ? 2 : 0;
    }
    if (cmd === '--version' || cmd === '-v') {
      process.stdout.write(version() + '\n');
      return 0;
    }
    if (!COMMAND_NAME.test(cmd)) throw new UsageError(`unknown command ${JSON.stringify(cmd)} (commands: ${listCommands().join(', ')})`);
    const command = await loadCommand(cmd);
    try {
      return await command.run(rest);
    } catch (e) {
      return report(e, cmd);
    }
  } catch (e) {
    return report(e, undefined);
  }
}

/** The message without a leading "rargen: " / "rargen CMD: " (the dispatcher adds its own). */
export function stripPrefix(message: string): string {
  return message.replace(/^(rargen(\s+[a-z-]+)?:\s*)+/, '');
}

function report(e: unknown, cmd: string | undefined): number {
  const err = e instanceof Error ? e : new Error(String(e));
  const message = stripPrefix(err.message);
  const prefix = cmd ? `rargen ${cmd}` : 'rargen';
  if (process.env.RARGEN_DEBUG) process.stderr.write((err.stack ?? message) + '\n');
  if (err instanceof UsageError || err instanceof ValidationError || err.name === 'ValidationError') {
    process.stderr.write(`${prefix}: ${message}\n`);
    process.stderr.write(cmd ? `Run 'rargen ${cmd} --help' for usage.\n` : `Run 'rargen --help' for usage.\n`);
    return 2;
  }
  if (err.name === 'AbortError') {
    process.stderr.write(`${prefix}: interrupted\n`);
    return 130;
  }
  process.stderr.write(`${prefix}: ${message}\n`);
  return 1;
}

function isMain(): boolean {
  const argv1 = process.argv[1];
  if (!argv1) return false;
  try {
    return realpathSync(argv1) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`rargen: ${(e as Error)?.message ?? String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
