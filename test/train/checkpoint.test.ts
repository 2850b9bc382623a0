import { describe, expect, it, beforeEach, afterEach } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  saveCheckpoint,
  MODEL_FILE,
  type CheckpointContents,
} from '../../lib/train/checkpoint.js';
import { openTorchZip } from '../../lib/io/index.js';

let dir = '';
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'rargen-ckpt-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function contents(step: number, fill: number): CheckpointContents {
  const mk = (shape: number[], v: number) => ({ shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => v + i * 0.5) });
  const names: [string, number[]][] = [['cls_token', [1, 1, 4]], ['blocks.0.attn.qkv.weight', [12, 4]], ['lm_head.bias', [3]]];
  return {
    params: new Map(names.map(([n, s]) => [n, mk(s, fill)])),
    expAvg: new Map(names.map(([n, s]) => [n, mk(s, fill + 100)])),
    expAvgSq: new Map(names.map(([n, s]) => [n, mk(s, fill + 200)])),
    state: {
      step,
      adamStep: step,
      seed: 42,
      data: { file: 'x.jsonl', fileBytes: 10, epoch: 1, emitted: 7, seed: 42, bufferSize: 16, shuffle: true, rank: 0, worldSize: 1 },
      decayed: ['cls_token', 'blocks.0.attn.qkv.weight'],
      config: { training: { seed: 42 } },
      extra: { loss: 1.5 },
    },
  };
}

describe('training checkpoints', () => {
  it('round-trips parameters, moments and state; the model file is a torch state dict', async () => {
    const c = contents(10, 1);
    const p = await saveCheckpoint(dir, c);
    expect(p).toBe(join(dir, 'checkpoint-10'));
    const back = await loadCheckpoint(p);
    expect(back.state).toEqual(c.state);
    for (const m of ['params', 'expAvg', 'expAvgSq'] as const) {
      expect([...back[m].keys()]).toEqual([...c[m].keys()]);
      for (const [k, t] of c[m]) {
        expect(back[m].get(k)!.shape).toEqual(t.shape);
        expect(back[m].get(k)!.data).toEqual(t.data);
      }
    }
    const ck = await openTorchZip(join(p, MODEL_FILE));
    expect(ck.format).toBe('torch-zip');
    expect(ck.tensors.get('cls_token')!.shape).toEqual([1, 1, 4]);
    await ck.close();
  });

  it('keeps the newest keepLast checkpoints and finds the latest', async () => {
    for (const s of [5, 10, 15, 20]) await saveCheckpoint(dir, contents(s, s), { keepLast: 2 });
    expect(await listCheckpoints(dir)).toEqual([15, 20]);
    expect(await latestCheckpoint(dir)).toBe(join(dir, 'checkpoint-20'));
    // saving the same step again replaces it
    await saveCheckpoint(dir, contents(20, 99), { keepLast: 2 });
    expect((await loadCheckpoint(join(dir, 'checkpoint-20'))).params.get('lm_head.bias')!.data[0]).toBe(99);
    expect(await latestCheckpoint(join(dir, 'nothing-here'))).toBe(null);
  });

  it('a save that fails part-way leaves the previous checkpoint as the latest', async () => {
    await saveCheckpoint(dir, contents(10, 1));
    await expect(
      saveCheckpoint(dir, contents(20, 2), {
        onStage: (s) => {
          if (s === 'state') throw new Error('disk full');
        },
      }),
    ).rejects.toThrow('disk full');
    expect(await listCheckpoints(dir)).toEqual([10]);
    expect(readdirSync(dir)).toEqual(['checkpoint-10']);
  });

  for (const stage of ['optimizer', 'rename']) {
    it(`a save killed (SIGKILL) at stage "${stage}" leaves the previous checkpoint loadable`, async () => {
      await saveCheckpoint(dir, contents(10, 1));
      const child = fileURLToPath(new URL('./checkpoint_kill_child.ts', import.meta.url));
      const vn = fileURLToPath(new URL('../../node_modules/vite-node/vite-node.mjs', import.meta.url));
      const r = spawnSync(process.execPath, [vn, child, dir, stage], { encoding: 'utf8', timeout: 60_000 });
      expect(r.signal).toBe('SIGKILL');
      const left = readdirSync(dir);
      expect(left.some((n) => n.startsWith('.checkpoint-20.tmp-'))).toBe(true);
      expect(existsSync(join(dir, 'checkpoint-20'))).toBe(false);
      const latest = await latestCheckpoint(dir);
      expect(latest).toBe(join(dir, 'checkpoint-10'));
      const back = await loadCheckpoint(latest!);
      expect(back.state.step).toBe(10);
      expect(back.params.get('lm_head.bias')!.data).toEqual(contents(10, 1).params.get('lm_head.bias')!.data);
      // the next save cleans the leftover
      await saveCheckpoint(dir, contents(30, 3));
      expect(readdirSync(dir).sort()).toEqual(['checkpoint-10', 'checkpoint-30']);
    });
  }

  it('says what is wrong with an incomplete folder', async () => {
    await expect(loadCheckpoint(join(dir, 'checkpoint-1'))).rejects.toThrow(/not a complete rargen training checkpoint/);
  });
});
