// rargen train from the command line: override typos are refused with the nearest keys,
// --demo trains into the user's folder, a run without a TTY prints progress lines and
// ends with what this run did.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run as train } from '../../lib/commands/train.js';
import { hasModelAddon } from '../api/helpers.js';

let tmp = '';
let stderr: string[] = [];
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'rargen-train-cli-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});
afterEach(() => vi.restoreAllMocks());

function captureStderr() {
  stderr = [];
  vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => (stderr.push(String(s)), true));
}

describe('rargen train options', () => {
  it('refuses an unknown override key, naming the nearest', async () => {
    await expect(train(['--demo', '--out', join(tmp, 'x'), 'training.max_train_step=3'])).rejects.toThrow('unknown config key training.max_train_step; did you mean training.max_train_steps?');
    await expect(train(['--demo', '--out', join(tmp, 'x'), 'optimizer.params.learnig_rate=1e-3'])).rejects.toThrow(/^unknown config key optimizer\.params\.learnig_rate; did you mean optimizer\.params\.learning_rate/);
  });
  it('--demo needs --out, and --out needs --demo', async () => {
    await expect(train(['--demo'])).rejects.toThrow('--demo needs --out DIR (a folder of yours for the run and the trained model)');
    await expect(train(['config=x.yaml', '--out', 'd'])).rejects.toThrow('--out is for --demo; the run folder of a config is experiment.output_dir=DIR');
  });
});

describe.runIf(hasModelAddon())('rargen train --demo --out DIR --steps 4, piped', () => {
  it('prints progress lines and the real end, and writes the model into DIR', async () => {
    const out = join(tmp, 'demo');
    process.env.RARGEN_PROGRESS_INTERVAL_MS = '1';
    captureStderr();
    try {
      expect(await train(['--demo', '--out', out, '--steps', '4', '--device', 'cpu', 'training.per_gpu_batch_size=4'])).toBe(0);
    } finally {
      delete process.env.RARGEN_PROGRESS_INTERVAL_MS;
      vi.restoreAllMocks();
    }
    const text = stderr.join('');
    const lines = text.split('\n').filter((l) => /^train \[[#-]+\] +\d+% \d\/4 /.test(l));
    expect(lines.length).toBeGreaterThanOrEqual(2); // no TTY: plain lines, not a redrawn bar
    expect(text).not.toContain('\r');
    expect(text).toMatch(/rargen train: this run did steps 0 -> 4 in [\d.]+ s; last step loss \d+\.\d{4}, accuracy [\d.]+%/);
    expect(existsSync(join(out, 'rar-demo.bin'))).toBe(true);
    expect(existsSync(join(out, 'demo.json'))).toBe(true);
  }, 120_000);
});
