// Data-parallel CPU training over MPI (issue 15, lib/dist.ts, src/binding_dist.cc):
// `mpirun -np 2 rargen train` against single-process runs of the same global batch.
// Every rank is a real `node cli.js train` process under Open MPI's mpirun
// (test/mpi/helpers.ts). Skipped, saying so, where mpirun is absent.
import { beforeAll, afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCheckpoint } from '../../lib/train/checkpoint.js';
import { writeDemoDataset } from '../../lib/demo/index.js';
import { canRun as run, CLI, compileCli, ENV, MPIRUN, ROOT } from './helpers.js';

let tmp = '';
let cfg = '';

function train(args: string[]): string[] {
  return [process.execPath, CLI, 'train', `config=${cfg}`, '--device', 'cpu', ...args];
}
/** N ranks of `rargen train`; extra per-rank args for an MPMD launch. */
function mpirun(n: number, args: string[], perRank?: string[][], timeout = 120_000) {
  const app = perRank ? perRank.flatMap((a, i) => [...(i ? [':'] : []), '-np', '1', ...train([...args, ...a])]) : ['-np', String(n), ...train(args)];
  const t0 = performance.now();
  const r = spawnSync('mpirun', [...MPIRUN, ...app], { cwd: ROOT, encoding: 'utf8', env: ENV, timeout });
  return { code: r.status, out: r.stdout + r.stderr, seconds: (performance.now() - t0) / 1000 };
}
function single(args: string[]) {
  const [node, ...rest] = train(args);
  const r = spawnSync(node!, rest, { cwd: ROOT, encoding: 'utf8', env: ENV, timeout: 120_000 });
  return { code: r.status, out: r.stdout + r.stderr };
}
const readLog = (p: string) =>
  readFileSync(p, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { step: number; loss: number; grad_norm: number; accuracy: number });
const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

/**
 * max over tensors of max|a-b| / max|b| (each tensor's own scale), and, for tensors
 * that are float noise around zero (max|b| < 1e-6: attn.k_norm.bias, whose gradient
 * vanishes exactly because softmax ignores a shift of the keys), the absolute error.
 */
async function paramError(dirA: string, dirB: string): Promise<{ rel: number; absOfZeroTensors: number }> {
  const a = await loadCheckpoint(dirA);
  const b = await loadCheckpoint(dirB);
  let rel = 0;
  let abs = 0;
  for (const [n, tb] of b.params) {
    const ta = a.params.get(n)!;
    let d = 0;
    let m = 0;
    for (let i = 0; i < tb.data.length; i++) {
      d = Math.max(d, Math.abs(ta.data[i]! - tb.data[i]!));
      m = Math.max(m, Math.abs(tb.data[i]!));
    }
    if (m < 1e-6) abs = Math.max(abs, d);
    else rel = Math.max(rel, d / m);
  }
  return { rel, absOfZeroTensors: abs };
}

beforeAll(async () => {
  if (!run) return;
  await compileCli();
  tmp = await mkdtemp(join(tmpdir(), 'rargen-mpi-'));
  const data = join(tmp, 'data.jsonl');
  await writeDemoDataset(data, 64, 1);
  cfg = join(tmp, 'cfg.yaml');
  // dropout 0: the native dropout masks hash the row position within a rank's batch,
  // so with dropout the runs are equal in distribution only, not sample for sample.
  writeFileSync(
    cfg,
    [
      'model:',
      '  vq_model: {codebook_size: 16}',
      '  generator: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, image_seq_len: 256, condition_num_classes: 10, dropout: 0.0, attn_drop: 0.0}',
      'dataset:',
      `  params: {pretokenization: "${data}", shuffle_buffer_size: 16}`,
      'training: {per_gpu_batch_size: 2, max_train_steps: 5}',
      'lr_scheduler: {params: {warmup_steps: 1}}',
    ].join('\n'),
  );
}, 180_000);
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe.skipIf(!run)('mpirun -np 2 rargen train (CPU)', () => {
  const dir = (n: string) => join(tmp, n);
  const log = (n: string) => join(tmp, `${n}.jsonl`);
  const ck = (n: string, s = 5) => join(dir(n), `checkpoint-${s}`);

  it('(a) 2 ranks x batch 2 equal 1 process x batch 4, and (b) 1 x batch 2 x 2 accumulation equals it too', async () => {
    const two = mpirun(2, ['--no-shuffle', `experiment.output_dir=${dir('r2')}`, '--log-jsonl', log('r2')]);
    expect(two.code, two.out).toBe(0);
    const one = single(['--no-shuffle', 'training.per_gpu_batch_size=4', `experiment.output_dir=${dir('r1')}`, '--log-jsonl', log('r1')]);
    expect(one.code, one.out).toBe(0);
    const acc = single(['--no-shuffle', 'training.gradient_accumulation_steps=2', `experiment.output_dir=${dir('ra')}`, '--log-jsonl', log('ra')]);
    expect(acc.code, acc.out).toBe(0);
    expect(two.out).toMatch(/batch 2 x 2 ranks = 4 per step/);
    // rank 0 alone prints: one summary line
    expect(two.out.match(/this run did steps 0 -> 5/g)?.length).toBe(1);
    const [l2, l1, la] = [readLog(log('r2')), readLog(log('r1')), readLog(log('ra'))];
    expect(l2.map((l) => l.step)).toEqual([1, 2, 3, 4, 5]);
    let worst = 0;
    for (let i = 0; i < 5; i++)
      for (const l of [l2[i]!, la[i]!]) {
        worst = Math.max(worst, rel(l.loss, l1[i]!.loss), rel(l.grad_norm, l1[i]!.grad_norm));
        expect(l.accuracy).toBe(l1[i]!.accuracy);
      }
    expect(worst).toBeLessThan(1e-5); // measured 6e-9
    // measured: 6.2e-6 (attn.proj.bias; AdamW divides tiny gradients by their own size) and 5e-10
    for (const other of ['r2', 'ra']) {
      const e = await paramError(ck(other), ck('r1'));
      expect(e.rel).toBeLessThan(1e-5);
      expect(e.absOfZeroTensors).toBeLessThan(1e-8);
    }
  }, 180_000);

  it('(d) a stopped 2-rank run resumes exactly (shuffled data: every rank has its own data position)', async () => {
    const full = mpirun(2, [`experiment.output_dir=${dir('f')}`, '--log-jsonl', log('f')]);
    expect(full.code, full.out).toBe(0);
    const part = mpirun(2, [`experiment.output_dir=${dir('p')}`, '--log-jsonl', log('p'), '--steps', '2']);
    expect(part.code, part.out).toBe(0);
    const state = (await loadCheckpoint(ck('p', 2))).state;
    expect(state.worldSize).toBe(2);
    expect(state.dataRanks?.map((d) => [d.rank, d.emitted])).toEqual([
      [0, 4],
      [1, 4],
    ]);
    const rest = mpirun(2, [`experiment.output_dir=${dir('p')}`, '--log-jsonl', log('p')]);
    expect(rest.code, rest.out).toBe(0);
    expect(rest.out).toMatch(/resumed from .*checkpoint-2 \(step 2/);
    expect(readLog(log('p')).map((l) => [l.step, l.loss, l.grad_norm])).toEqual(readLog(log('f')).map((l) => [l.step, l.loss, l.grad_norm]));
    expect(await paramError(ck('p'), ck('f'))).toEqual({ rel: 0, absOfZeroTensors: 0 });
    // a different number of ranks cannot resume it exactly, and says so
    const wrong = single([`experiment.output_dir=${dir('p')}`, 'training.max_train_steps=6']);
    expect(wrong.code).not.toBe(0);
    expect(wrong.out).toMatch(/trained on 2 rank\(s\), this run has 1; launch with mpirun -np 2/);
  }, 180_000);

  it('(e) the overlapped all-reduce (each bucket begun once backward has made it final) equals the one after backward, bit for bit', async () => {
    // 2 blocks, 2 micro-batches (only the last one's backward starts buckets), buckets of
    // 1000 floats (RARGEN_DIST_MPI_BUCKET), so that buckets of the head, of each block and
    // of the shared tables are begun at different stages of backward.
    const go = (name: string, overlap: '0' | '1') => {
      const args = ['--no-shuffle', 'model.generator.num_hidden_layers=2', 'training.gradient_accumulation_steps=2', 'training.max_train_steps=3', `experiment.output_dir=${dir(name)}`, '--log-jsonl', log(name)];
      const env = ['-x', `RARGEN_DIST_OVERLAP=${overlap}`, '-x', 'RARGEN_DIST_MPI_BUCKET=1000', '-x', 'RARGEN_DIST_OVERLAP_REPORT=1'];
      const r = spawnSync('mpirun', [...MPIRUN, ...env, '-np', '2', ...train(args)], { cwd: ROOT, encoding: 'utf8', env: ENV, timeout: 120_000 });
      return { code: r.status, out: r.stdout + r.stderr };
    };
    const on = go('ov1', '1');
    expect(on.code, on.out).toBe(0);
    const off = go('ov0', '0');
    expect(off.code, off.out).toBe(0);
    const re = /gradient all-reduce: (\d+) of (\d+) buckets begun during backward \(final after stage: ([\d: ]+)\)/g;
    const counts = (out: string) => [...out.matchAll(re)].map((m) => [Number(m[1]), Number(m[2]), m[3]!] as const);
    const [c1, c0] = [counts(on.out), counts(off.out)];
    console.log(`overlapped all-reduce, per step and rank: ${c1[0]![0]} of ${c1[0]![1]} buckets begun during backward; buckets final after stage (1 head, 2-3 blocks, 4 tables): ${c1[0]![2]}`);
    expect(c1.length).toBe(6); // 3 steps x 2 ranks
    expect(c0.length).toBe(6);
    for (const [early, total, stages] of c1) {
      expect(total).toBeGreaterThan(20);
      expect(early).toBe(total); // every bucket begun by backward's reports (the last ones at its end)
      // buckets become final at each of the 4 stages (head, block 1, block 0, shared tables), in that order
      expect(stages.split(' ').map((x) => Number(x.split(':')[0]))).toEqual([1, 2, 3, 4]);
    }
    for (const [early, , stages] of c0) {
      expect(early).toBe(0);
      expect(stages).toBe(c1[0]![2]); // the same plan
    }
    const pick = (n: string) => readLog(log(n)).map((l) => [l.step, l.loss, l.grad_norm, l.accuracy]);
    expect(pick('ov1')).toEqual(pick('ov0'));
    expect(pick('ov1').length).toBe(3);
    expect(await paramError(ck('ov1', 3), ck('ov0', 3))).toEqual({ rel: 0, absOfZeroTensors: 0 });
  }, 180_000);

  it('RARGEN_DIST_CHECKSUM=1 checks after every step that the ranks hold identical parameters', () => {
    const r = spawnSync('mpirun', [...MPIRUN, '-x', 'RARGEN_DIST_CHECKSUM=1', '-np', '2', ...train([`experiment.output_dir=${dir('c')}`, 'training.max_train_steps=3'])], {
      cwd: ROOT,
      encoding: 'utf8',
      env: ENV,
      timeout: 120_000,
    });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stderr).toMatch(/parameters identical on all 2 ranks after every step/);
  }, 120_000);

  it('a config that differs between ranks stops every rank, naming the key and the rank', () => {
    const r = mpirun(2, [`experiment.output_dir=${dir('m')}`], [[], ['training.seed=7']]);
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/the 2 MPI ranks disagree on the training run: config\.training\.seed is 7 on rank 1 but 42 on rank 0/);
    expect(existsSync(join(dir('m'), 'checkpoint-5'))).toBe(false);
  }, 120_000);

  it('(c) a killed rank stops the other within the timeout, and mpirun names it', () => {
    // rank 1 is SIGKILLed 3 s into a long run; rank 0 must not hang in the next all-reduce
    const args = [`experiment.output_dir=${dir('k')}`, 'training.max_train_steps=1000000', 'experiment.save_every=1000000'];
    const cmd = train(args).map((a) => `'${a}'`).join(' ');
    const t0 = performance.now();
    const r = spawnSync(
      'mpirun',
      [...MPIRUN, '-np', '1', ...train(args), ':', '-np', '1', 'bash', '-c', `${cmd} & p=$!; sleep 3; kill -9 $p; wait $p`],
      { cwd: ROOT, encoding: 'utf8', env: ENV, timeout: 90_000 },
    );
    const out = r.stdout + r.stderr;
    const seconds = (performance.now() - t0) / 1000;
    expect(r.error, 'mpirun still running after 90 s').toBeUndefined();
    expect(seconds).toBeLessThan(60); // measured: the job ends about 1 s after the kill
    expect(r.status, out).not.toBe(0);
    expect(out).toMatch(/steps 0 -> 1000000/); // rank 0 was training when rank 1 died
    expect(out).toMatch(/Process name: \[\[\d+,1\],1\]\s+Exit code:\s+137/);
  }, 120_000);

  // (c) for a rank that hangs instead of dying: Open MPI has no collective timeout, so
  // without the hang watch (src/dist/mpi.h) the other rank would wait forever.
  for (const stopped of [1, 0])
    it(`(c) a rank stopped with SIGSTOP (rank ${stopped}) ends the job within RARGEN_DIST_TIMEOUT, named, the last checkpoint intact`, async () => {
      const out = dir(`hang${stopped}`);
      const pidFile = join(tmp, `hang${stopped}.pid`);
      const stopFile = join(tmp, `hang${stopped}.stopped`);
      const args = [`experiment.output_dir=${out}`, 'training.max_train_steps=1000000', 'experiment.save_every=2'];
      const cmd = train(args).map((a) => `'${a}'`).join(' ');
      // the stopped rank: started by bash, which stops it once checkpoint-4 exists and then waits while it lives
      const wrapper = ['bash', '-c', `${cmd} & p=$!; echo $p > ${pidFile}; until [ -d ${join(out, 'checkpoint-4')} ]; do sleep 0.05; done; kill -STOP $p; date +%s.%N > ${stopFile}; while kill -0 $p 2>/dev/null; do sleep 0.2; done`];
      const apps = [0, 1].map((r) => ['-np', '1', ...(r === stopped ? wrapper : train(args))]);
      const env = { ...ENV, RARGEN_DIST_TIMEOUT: '3' };
      try {
        const r = spawnSync('mpirun', [...MPIRUN, '-x', 'RARGEN_DIST_TIMEOUT', ...apps[0]!, ':', ...apps[1]!], { cwd: ROOT, encoding: 'utf8', env, timeout: 90_000 });
        const end = Date.now() / 1000;
        const log = r.stdout + r.stderr;
        expect(r.error, 'mpirun still running after 90 s: ' + log).toBeUndefined();
        expect(r.status, log).not.toBe(0);
        const after = end - Number(readFileSync(stopFile, 'utf8'));
        if (stopped === 1) {
          // rank 0 names it: 3 s of silence, then MPI_Abort
          expect(log).toMatch(/rank 0 of 2: the [a-z -]+(\([a-z ]+\) )?\(collective #\d+\) did not complete within RARGEN_DIST_TIMEOUT=3\.0 s: rank 1 has sent nothing for 1\.8 s or more \(heartbeats are every 0\.6 s; rank 1: last heard [\d.]+ s ago, at collective #\d+\): hung or stopped/);
          expect(after).toBeLessThan(3 + 5); // measured 3.1 to 4.1 s
        } else {
          // rank 1 hears nothing from rank 0 for the timeout + 3 s of grace (rank 0 names the culprit when it is alive)
          expect(log).toMatch(/rank 1 of 2: the .* did not complete: rank 0 has sent nothing for [\d.]+ s \(RARGEN_DIST_TIMEOUT=3\.0 s \+ 3\.0 s\): rank 0 is hung or stopped/);
          expect(after).toBeLessThan(3 + 3 + 5); // measured 5.7 to 6.9 s
        }
        expect(log).toMatch(/Checkpoints already written are intact/);
        // the newest complete checkpoint loads
        const cks = readdirSync(out).filter((n) => /^checkpoint-\d+$/.test(n)).sort((a, b) => Number(a.slice(11)) - Number(b.slice(11)));
        expect(cks.length).toBeGreaterThan(0);
        const ck = await loadCheckpoint(join(out, cks.at(-1)!));
        expect(ck.state.step).toBeGreaterThanOrEqual(4);
        expect(ck.params.size).toBeGreaterThan(0);
      } finally {
        // the stopped process may outlive its killed bash parent
        if (existsSync(pidFile)) spawnSync('kill', ['-9', readFileSync(pidFile, 'utf8').trim()]);
      }
    }, 120_000);
});
