// The `rargen` binary as users run it: the TypeScript is compiled into a private
// folder (build-cli-test/, ignored by git) and spawned with node, so the dispatcher's
// dynamic command loading, exit codes and output streams are tested for real.
import { beforeAll, afterAll, describe, expect, it } from 'vitest';
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint, saveSafetensors, lazyTensors } from '../../lib/io/index.js';
import { decode, encode, generate, loadGenerator, loadTokenizer } from '../../lib/generate.js';
import { decodePng, flipHorizontal, savePng } from '../../lib/image.js';
import { hasModelAddon, randomGeneratorFor16x16 } from '../api/helpers.js';

const ROOT = join(import.meta.dirname, '..', '..');
const OUT = join(ROOT, 'build-cli-test');
const CLI = join(OUT, 'lib', 'cli.js');
const FIX = join(ROOT, 'test', 'fixtures');
let tmp = '';

function rargen(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, RARGEN_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(async () => {
  // tsc reports type errors anywhere in the project but still emits; the CLI must exist.
  try {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json'), '--outDir', OUT], { cwd: ROOT, stdio: 'pipe' });
  } catch {
    /* see below */
  }
  if (!existsSync(CLI)) throw new Error('tsc did not produce build-cli-test/lib/cli.js');
  tmp = await mkdtemp(join(tmpdir(), 'rargen-cli-'));
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('dispatcher', () => {
  it('--help lists every command in the commands folder with its summary', () => {
    const r = rargen('--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: rargen <command> \[options\]/);
    for (const cmd of ['decode', 'generate', 'inspect', 'tokenize']) expect(r.stdout).toMatch(new RegExp(`^  ${cmd} +\\S`, 'm'));
    expect(r.stdout).toContain("list a checkpoint's tensors");
    expect(r.stdout).not.toMatch(/^ {2}_shared/m);
  });

  it('--version prints the package version', () => {
    const r = rargen('--version');
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
  });

  it('exits 2 with usage for no command, an unknown one or a bad name', () => {
    expect(rargen().code).toBe(2);
    const r = rargen('frobnicate');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^rargen: unknown command "frobnicate" \(commands: .*inspect.*\)\nRun 'rargen --help' for usage\.\n$/);
    const bad = rargen('../lib/cli');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('unknown command "../lib/cli"');
    expect(rargen('_shared').code).toBe(2);
  });

  it('help <command> prints the command help', () => {
    const r = rargen('help', 'inspect');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: rargen inspect FILE \[--json\]/);
  });
});

describe('inspect', () => {
  it('--json reports rar-tiny: kind, inferred config, every tensor', () => {
    const r = rargen('inspect', join(FIX, 'rar-tiny', 'model.bin'), '--json');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const j = JSON.parse(r.stdout);
    expect(j.format).toBe('torch-zip');
    expect(j.kind).toBe('rar-generator');
    expect(j.valid).toBe(true);
    expect(j.problems).toBeNull();
    expect(j.preset).toBeNull();
    expect(j.numTensors).toBe(45);
    expect(j.numParams).toBe(303_840);
    expect(j.config).toEqual({ hiddenSize: 64, depth: 2, numHeads: 4, headDim: 16, mlpDim: 256, seqLen: 16, codebookSize: 32, numClasses: 10, posEmbedRows: 1040, timestepRows: 116 });
    expect(j.tensors[0]).toEqual({ name: 'cls_token', dtype: 'float32', shape: [1, 1, 64] });
    expect(j.tensors.find((t: { name: string }) => t.name === 'embeddings.weight')).toEqual({ name: 'embeddings.weight', dtype: 'float32', shape: [44, 64] });
    expect(j.tensors.find((t: { name: string }) => t.name === 'blocks.1.attn.qkv.weight').shape).toEqual([192, 64]);
  });

  it('--json reports vqgan-tiny', () => {
    const j = JSON.parse(rargen('inspect', join(FIX, 'vqgan-tiny', 'model.bin'), '--json').stdout);
    expect(j.kind).toBe('maskgit-vqgan');
    expect(j.valid).toBe(true);
    expect(j.numTensors).toBe(114);
    expect(j.config).toEqual({ hiddenChannels: 32, channelMult: [1, 1, 2], numResBlocks: 2, zChannels: 32, codebookSize: 64, resolution: 64 });
    expect(j.tensors.at(-1)).toEqual({ name: 'quantize.embedding.weight', dtype: 'float32', shape: [64, 32] });
  });

  it('reads safetensors the same way and prints text without --json', async () => {
    const src = await openCheckpoint(join(FIX, 'rar-tiny', 'model.bin'));
    const file = join(tmp, 'rar-tiny.safetensors');
    try {
      await saveSafetensors(file, lazyTensors(src));
    } finally {
      await src.close();
    }
    const j = JSON.parse(rargen('inspect', file, '--json').stdout);
    expect(j.format).toBe('safetensors');
    expect(j.config.hiddenSize).toBe(64);
    expect(j.numTensors).toBe(45);
    const text = rargen('inspect', file);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('safetensors, 45 tensors, 303.8K parameters (303840)');
    expect(text.stdout).toContain('kind: rar-generator');
    expect(text.stdout).toContain('  mlpDim: 256');
    expect(text.stdout).toMatch(/^ {2}blocks\.0\.attn\.qkv\.weight +float32 +\(192, 64\)$/m);
  });

  it('errors: missing file exits 1 in one line, bad usage exits 2', () => {
    const r = rargen('inspect', join(tmp, 'nope.bin'));
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^rargen inspect: .*nope\.bin/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const u = rargen('inspect');
    expect(u.code).toBe(2);
    expect(u.stderr).toBe("rargen inspect: a checkpoint FILE is required\nRun 'rargen inspect --help' for usage.\n");
    const o = rargen('inspect', 'x.bin', '--bogus');
    expect(o.code).toBe(2);
    expect(o.stderr).toMatch(/^rargen inspect: Unknown option '--bogus'/);
  });
});

describe('generate (argument handling; sampling is tested in test/api/e2e)', () => {
  const gen = () => join(FIX, 'rar-tiny', 'model.bin');

  it('documents every option', () => {
    const r = rargen('generate', '--help');
    expect(r.code).toBe(0);
    for (const flag of ['--generator', '--tokenizer', '--preset', '--classes', '--guidance-scale', '--guidance-pow', '--temperature', '--seed', '--greedy', '--top-k', '--top-p', '--batch-size', '--device', '--precision', '--tokens-out', '--out'])
      expect(r.stdout).toContain(flag);
  });

  it('exits 2 on usage errors with one message', () => {
    const cases: [string[], string][] = [
      [['--classes', '1'], '--generator is required'],
      [['--generator', gen()], '--classes is required'],
      [['--generator', gen(), '--classes', '1,x', '--tokens-out', 't.json'], '--classes expects class ids (0..9), ranges like 0-9 but received "1,x"'],
      [['--generator', gen(), '--classes', '1'], 'nothing to write: pass --out DIR, --grid FILE.png and/or --tokens-out FILE.json'],
      [['--generator', gen(), '--classes', '1', '--out', 'o'], '--out needs --tokenizer to decode the tokens to images'],
      [['--generator', gen(), '--classes', '1', '--tokens-out', 't.json', '--temperature', 'hot'], '--temperature expects a number but received "hot"'],
      [['--generator', gen(), '--classes', '1', '--tokens-out', 't.json', '--seed=-3'], '--seed expects a non-negative integer but received "-3"'],
      [['--generator', gen(), '--classes', '1', '--tokens-out', 't.json', '--device', 'tpu'], '--device expects one of auto, cpu, cuda, cuda:N but received "tpu"'],
      [['--generator', gen(), '--classes', '1', '--tokens-out', 't.json', '--preset', 'rar-m'], '--preset expects one of rar-b, rar-l, rar-xl, rar-xxl but received "rar-m"'],
      [['--generator', gen(), '--classes', '1', '--tokens-out', 't.json', '--batch-size', '0'], '--batch-size expects an integer >= 1 but received "0"'],
    ];
    for (const [args, msg] of cases) {
      const r = rargen('generate', ...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toBe(`rargen generate: ${msg}\nRun 'rargen generate --help' for usage.\n`);
    }
  });

  it('exits 1 naming preset and file when the preset does not match the weights', () => {
    const r = rargen('generate', '--generator', gen(), '--preset', 'rar-b', '--classes', '1', '--tokens-out', join(tmp, 't.json'), '--device', 'cpu');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^rargen generate: preset rar-b \(hidden 768, .*\) does not match .*rar-tiny\/model\.bin \(hidden 64, depth 2, /);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('parse errors stay on one line', () => {
  it("--seed -3 (ambiguous to parseArgs): reported by the option's own check", () => {
    const r = rargen('generate', '--generator', 'x', '--classes', '1', '--tokens-out', 't', '--seed', '-3');
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toBe('rargen generate: --seed expects a non-negative integer but received "-3"');
    expect(r.stderr.trim().split('\n')).toHaveLength(2);
  });
});

describe.skipIf(!hasModelAddon())('generate, decode and tokenize end to end (native addon)', () => {
  it('generate --tokens-out writes classLabels and tokens, same as the API', async () => {
    const out = join(tmp, 'tokens.json');
    const r = rargen('generate', '--generator', join(FIX, 'rar-tiny', 'model.bin'), '--classes', '3,1-2', '--seed', '11', '--guidance-scale', '2', '--guidance-pow', '1', '--device', 'cpu', '--tokens-out', out);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('rargen: CPU requested');
    const j = JSON.parse(readFileSync(out, 'utf8'));
    expect(j.classLabels).toEqual([3, 1, 2]);
    expect(j.tokens).toHaveLength(3);
    const g = await loadGenerator(join(FIX, 'rar-tiny', 'model.bin'), { device: 'cpu' });
    try {
      const api = await generate({ generator: g, classLabels: [3, 1, 2], seed: 11, guidanceScale: 2, guidanceScalePow: 1 });
      expect(j.tokens).toEqual(api.tokens.map((t) => Array.from(t)));
    } finally {
      g.dispose();
    }
  });

  it('generate: an out-of-range class is a usage error naming index and value', () => {
    const r = rargen('generate', '--generator', join(FIX, 'rar-tiny', 'model.bin'), '--classes', '1,10', '--device', 'cpu', '--tokens-out', join(tmp, 'x.json'));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('rargen generate: --classes: class 10 is out of range: the model has 10 classes (0..9)\n');
  });

  it('generate --out writes PNGs in class order; decode writes the same images from the tokens', async () => {
    const gen = join(tmp, 'rand256.bin');
    await randomGeneratorFor16x16(gen);
    const dir = join(tmp, 'png');
    const toks = join(tmp, 'rand-tokens.json');
    const tok = join(FIX, 'vqgan-tiny', 'model.bin');
    const r = rargen('generate', '--generator', gen, '--tokenizer', tok, '--classes', '4,5,6', '--seed', '2', '--batch-size', '2', '--device', 'cpu', '--out', dir, '--tokens-out', toks);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['000000.png', '000001.png', '000002.png']);
    const d = rargen('decode', '--tokenizer', tok, '--tokens', toks, '--out', join(tmp, 'png2'), '--device', 'cpu');
    expect(d.code, d.stderr).toBe(0);
    for (const f of readdirSync(dir)) {
      const a = decodePng(readFileSync(join(dir, f)));
      const b = decodePng(readFileSync(join(tmp, 'png2', f)));
      expect([a.width, a.height]).toEqual([64, 64]);
      expect(Buffer.from(a.data).equals(Buffer.from(b.data))).toBe(true);
    }
    // rar-tiny (16 tokens) cannot be decoded by vqgan-tiny (256)
    const bad = rargen('generate', '--generator', join(FIX, 'rar-tiny', 'model.bin'), '--tokenizer', tok, '--classes', '1', '--device', 'cpu', '--out', join(tmp, 'png3'));
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('the tokenizer decodes 256 tokens per image but the generator samples 16');
  });

  it('tokenize writes {"class_id", "tokens"} lines in ImageFolder order, matching encode()', async () => {
    const root = join(tmp, 'folder');
    const tokFile = join(FIX, 'vqgan-tiny', 'model.bin');
    const vq = await loadTokenizer(tokFile, { device: 'cpu' });
    try {
      const imgs = await decode(vq, [Array.from({ length: 256 }, (_, i) => i % 64), Array.from({ length: 256 }, (_, i) => (i * 7) % 64)]);
      await mkdir(join(root, 'dog'), { recursive: true });
      await mkdir(join(root, 'cat'), { recursive: true });
      // 64x64 already: the ADM crop is the identity at the tokenizer's resolution.
      await savePng(join(root, 'dog', 'a.png'), imgs[0]!);
      await savePng(join(root, 'cat', 'b.png'), imgs[1]!);
      const out = join(tmp, 'pre.jsonl');
      const r = rargen('tokenize', '--tokenizer', tokFile, '--images', root, '--out', out, '--device', 'cpu', '--flip');
      expect(r.code, r.stderr).toBe(0);
      const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      // cat = 0, dog = 1; the official order: the batch's images, then their flips
      expect(lines.map((l) => l.class_id)).toEqual([0, 1, 0, 1]);
      const want = await encode(vq, [imgs[1]!, imgs[0]!, flipHorizontal(imgs[1]!), flipHorizontal(imgs[0]!)]);
      expect(lines.map((l) => l.tokens)).toEqual(want.map((t) => Array.from(t)));
      expect(Object.keys(lines[0])).toEqual(['class_id', 'tokens']);
      // batches of one: image, flip, image, flip
      const out1 = join(tmp, 'pre1.jsonl');
      const r1 = rargen('tokenize', '--tokenizer', tokFile, '--images', root, '--out', out1, '--device', 'cpu', '--flip', '--batch-size', '1');
      expect(r1.code, r1.stderr).toBe(0);
      const lines1 = readFileSync(out1, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(lines1.map((l) => l.tokens)).toEqual([0, 2, 1, 3].map((i) => lines[i].tokens));
    } finally {
      vq.dispose();
    }
  });
});

describe('generate --demo (the shipped demo model, offline)', () => {
  it.runIf(hasModelAddon())('writes one 128x128 palette PNG per class name, reproducibly', async () => {
    const out1 = join(tmp, 'demo1');
    const out2 = join(tmp, 'demo2');
    const r1 = rargen('generate', '--demo', '--class', 'circle,square', '--seed', '5', '--out', out1);
    expect(r1.code, r1.stderr).toBe(0);
    expect(r1.stderr).toContain('wrote 2 images (circle, square)');
    expect(readdirSync(out1).sort()).toEqual(['000000.png', '000001.png']);
    expect(rargen('generate', '--demo', '--class', 'circle,square', '--seed', '5', '--out', out2).code).toBe(0);
    const { DEMO_PALETTE } = await import('../../lib/demo/shapes.js');
    const palette = new Set(DEMO_PALETTE.map(([r, g, b]) => (r << 16) | (g << 8) | b));
    for (const f of ['000000.png', '000001.png']) {
      const a = decodePng(readFileSync(join(out1, f)));
      const b = decodePng(readFileSync(join(out2, f)));
      expect([a.width, a.height]).toEqual([128, 128]);
      expect(Buffer.from(a.data).equals(Buffer.from(b.data))).toBe(true); // same seed, same picture
      for (let i = 0; i < a.data.length; i += 3) expect(palette.has((a.data[i]! << 16) | (a.data[i + 1]! << 8) | a.data[i + 2]!)).toBe(true);
    }
  });

  it('rejects an unknown class name and --class without --demo', () => {
    const r = rargen('generate', '--demo', '--class', 'blob', '--out', join(tmp, 'x'));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown class name "blob"; the classes are: 0 circle, 1 square,');
    expect(rargen('generate', '--generator', 'g.bin', '--class', 'circle', '--out', join(tmp, 'x')).code).toBe(2);
  });
});

describe('generate: every option error names the flag, before the model loads', () => {
  const tiny = () => join(FIX, 'rar-tiny', 'model.bin');
  const usage = (msg: string) => `rargen generate: ${msg}\nRun 'rargen generate --help' for usage.\n`;
  it('a missing file is named once, without a doubled prefix', () => {
    const r = rargen('generate', '--generator', 'nope.bin', '--classes', '1', '--tokens-out', join(tmp, 't.json'));
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(usage('--generator nope.bin: no such file (a path, or a name from `rargen download --help`)'));
    const tok = join(FIX, 'vqgan-tiny', 'model.bin');
    const w = rargen('generate', '--generator', tok, '--classes', '1', '--tokens-out', join(tmp, 't.json'));
    expect(w.stderr).toBe(usage(`--generator ${tok} holds a MaskGIT-VQGAN tokenizer, not a RAR generator (pass it as --tokenizer)`));
    // the readers' messages start with "rargen: "; the dispatcher prints one prefix
    const i = rargen('inspect', 'nope.bin');
    expect(i.code).toBe(1);
    expect(i.stderr).toBe("rargen inspect: nope.bin: cannot open: ENOENT: no such file or directory, open 'nope.bin'\n");
  });
  it('class lists: range bounds checked before expanding, negative ids, names on a model without names', () => {
    const cases: [string, string][] = [
      ['0-99999999', '--classes: class 99999999 is out of range: the model has 10 classes (0..9)'],
      ['-1', '--classes expects class ids (0..9), ranges like 0-9 but received "-1"'],
      ['tabby', '--classes expects class ids (0..9), ranges like 0-9 but received "tabby"'],
    ];
    for (const [list, msg] of cases) {
      const r = rargen('generate', '--generator', tiny(), '--classes', list, '--tokens-out', join(tmp, 't.json'));
      expect(r.code, list).toBe(2);
      expect(r.stderr).toBe(usage(msg));
    }
  });
  it('--out on a file, --greedy with --top-k, --grid not a PNG', () => {
    const file = join(tmp, 'a-file');
    writeFileSync(file, '');
    const cases: [string[], string][] = [
      [['--out', file], `--out ${file} is a file, not a folder: give a folder for the PNG images (use --grid FILE.png for one picture)`],
      [['--out', join(tmp, 'o'), '--greedy', '--top-k', '5'], '--greedy takes the most likely token: it cannot be combined with --top-k'],
      [['--grid', join(tmp, 'g.jpg')], `--grid expects a FILE.png but received ${JSON.stringify(join(tmp, 'g.jpg'))}`],
    ];
    for (const [args, msg] of cases) {
      const r = rargen('generate', '--demo', '--classes', 'circle', ...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toBe(usage(msg));
    }
  });
});

describe.runIf(hasModelAddon())('generate --out: Ctrl-C keeps the images written so far', () => {
  it('exits 130 after SIGINT with the finished batches on disk', async () => {
    const { spawn } = await import('node:child_process');
    const out = join(tmp, 'sigint');
    const child = spawn(process.execPath, [CLI, 'generate', '--demo', '--classes', '0-9,0-9,0-9,0-9,0-9,0-9,0-9,0-9,0-9,0-9', '--batch-size', '1', '--out', out], { cwd: ROOT });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const done = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    for (let i = 0; i < 600 && !existsSync(join(out, '000001.png')); i++) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGINT');
    const code = await done;
    expect(code, stderr).toBe(130);
    const files = readdirSync(out).sort();
    expect(files.length).toBeGreaterThanOrEqual(2);
    expect(files.length).toBeLessThan(100);
    expect(files[0]).toBe('000000.png');
    expect(stderr).toContain(`rargen generate: interrupted; the ${files.length} images written to ${out} are kept`);
    for (const f of files) expect(decodePng(readFileSync(join(out, f))).width).toBe(128); // whole files only
  }, 60_000);
});
