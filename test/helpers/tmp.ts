// Per-test temporary directories, removed after the test file.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

export function tempDir(tag: string): string {
  const d = mkdtempSync(join(tmpdir(), `rargen-${tag}-`));
  afterAll(() => rmSync(d, { recursive: true, force: true }));
  return d;
}
