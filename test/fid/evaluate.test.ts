// rargen fid end to end on small .npz batches with the fixture formula weights: the
// batched evaluation equals the metrics computed from the features directly, stored
// reference statistics are used when present, broken .npz files give clear errors,
// a missing weights file says where to get it, and `rargen download` fetches
// atomically (from a local server).
import { createServer, type Server } from 'node:http';
import { createReadStream, existsSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { evaluateNpz, FeatureStatistics, frechetDistance, ImageNpz, inceptionScore, precisionRecall } from '../../lib/fid.js';
import { findInceptionWeights, loadInception, type InceptionV3 } from '../../lib/inception.js';
import { writeNpz, type NpyArray } from '../../lib/io/index.js';
import { main } from '../../lib/cli.js';
import { formatResult } from '../../lib/commands/fid.js';
import { tempDir } from '../helpers/tmp.js';
import { formulaWeightsFile, requireEvalBinding, testImages } from './helpers.js';

const tmp = tempDir('fid-eval');
let weights = '';
let net: InceptionV3;


const u8 = (shape: number[], data: Uint8Array): NpyArray => ({ dtype: 'uint8', shape, data });

async function capture(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => ((err += String(s)), true));
  try {
    const code = await main(argv);
    return { code, out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

const refImages = testImages(6, 64, 64, 1);
const samImages = testImages(5, 48, 40, 2);
let refPath = '';
let samPath = '';

beforeAll(async () => {
  requireEvalBinding();
  weights = await formulaWeightsFile(tmp);
  net = await loadInception(weights, { device: 'cpu' });
  refPath = join(tmp, 'ref.npz');
  samPath = join(tmp, 'sample.npz');
  await writeNpz(refPath, { arr_0: u8([6, 64, 64, 3], refImages) });
  await writeNpz(samPath, { arr_0: u8([5, 48, 40, 3], samImages) });
});
afterAll(() => net?.dispose());

describe('evaluateNpz', () => {
  it('equals the metrics computed from the features directly', async () => {
    const stages = new Set<string>();
    const r = await evaluateNpz(refPath, samPath, { inception: weights, device: 'cpu', batchSize: 4, onProgress: (p) => stages.add(p.stage) });
    expect([...stages]).toEqual(['reference', 'sample', 'statistics', 'precision-recall']);
    expect(r.referenceImages).toBe(6);
    expect(r.sampleImages).toBe(5);
    expect(r.referenceStatsFromFile).toBe(false);

    // the same from the features directly (sFID's path is checked by the next test)
    const fr = await net.features(refImages, 6, 64, 64);
    const fs = await net.features(samImages, 5, 48, 40);
    const stats = async (x: Float32Array, d: number) => {
      const s = new FeatureStatistics(d);
      await s.add(x);
      return s.result();
    };
    const fid = await frechetDistance(await stats(fs.pool3, 2048), await stats(fr.pool3, 2048));
    const is = await inceptionScore(fs.logits);
    const pr = await precisionRecall(fr.pool3, fs.pool3, 2048);
    console.log(`tiny batches: fid ${r.fid} sfid ${r.sfid} is ${r.inceptionScore} precision ${r.precision} recall ${r.recall}`);
    console.log(`evaluateNpz vs direct: fid abs ${Math.abs(r.fid - fid).toExponential(3)}, is abs ${Math.abs(r.inceptionScore - is).toExponential(3)}`);
    expect(Math.abs(r.fid - fid)).toBeLessThan(4e-14); // measured 1.2e-14
    expect(r.inceptionScore).toBe(is);
    expect(r.precision).toBe(pr.precision);
    expect(r.recall).toBe(pr.recall);
    for (const v of [r.fid, r.sfid, r.inceptionScore]) expect(Number.isFinite(v) && v > 0).toBe(true);
  });

  it('uses mu, sigma, mu_s, sigma_s of the reference .npz when present', async () => {
    const fs = await net.features(samImages, 5, 48, 40);
    const st = async (x: Float32Array, d: number) => {
      const s = new FeatureStatistics(d);
      await s.add(x);
      return s.result();
    };
    const p = await st(fs.pool3, 2048);
    const s = await st(fs.spatial, 2023);
    const f64 = (shape: number[], data: Float64Array): NpyArray => ({ dtype: 'float64', shape, data });
    const ref2 = join(tmp, 'ref-stats.npz');
    await writeNpz(ref2, {
      arr_0: u8([6, 64, 64, 3], refImages),
      mu: f64([2048], p.mu),
      sigma: f64([2048, 2048], p.sigma),
      mu_s: f64([2023], s.mu),
      sigma_s: f64([2023, 2023], s.sigma),
    });
    const r = await evaluateNpz(ref2, samPath, { inception: net });
    expect(r.referenceStatsFromFile).toBe(true);
    console.log(`self fid ${r.fid} sfid ${r.sfid}`);
    expect(Math.abs(r.fid)).toBeLessThan(2e-14); // measured 6.4e-15
    expect(Math.abs(r.sfid)).toBeLessThan(6.5e-12); // measured 2.1e-12
  });

  it('rejects broken .npz files with messages naming the file and the problem', async () => {
    const bad = async (name: string, arrays: Record<string, NpyArray>) => {
      const p = join(tmp, name);
      await writeNpz(p, arrays);
      return p;
    };
    const f32 = await bad('f32.npz', { arr_0: { dtype: 'float32', shape: [5, 8, 8, 3], data: new Float32Array(5 * 8 * 8 * 3) } });
    await expect(ImageNpz.open(f32)).rejects.toThrow(`${f32}: arr_0 must be uint8 images (N, H, W, 3) but has dtype float32`);
    const gray = await bad('gray.npz', { arr_0: u8([5, 8, 8], new Uint8Array(320)) });
    await expect(ImageNpz.open(gray)).rejects.toThrow('but has shape (5, 8, 8)');
    const rgba = await bad('rgba.npz', { arr_0: u8([5, 8, 8, 4], new Uint8Array(5 * 8 * 8 * 4)) });
    await expect(ImageNpz.open(rgba)).rejects.toThrow('but has shape (5, 8, 8, 4)');
    const none = await bad('none.npz', { images: u8([5, 8, 8, 3], new Uint8Array(960)) });
    await expect(ImageNpz.open(none)).rejects.toThrow('no arr_0 in the archive (it has images)');
    const few = await bad('few.npz', { arr_0: u8([3, 8, 8, 3], new Uint8Array(576)) });
    await expect(evaluateNpz(few, samPath, { inception: net })).rejects.toThrow('has 3 images; precision/recall need more than k=3');
    const noSigma = await bad('nosigma.npz', { arr_0: u8([5, 8, 8, 3], new Uint8Array(960)), mu: { dtype: 'float64', shape: [2048], data: new Float64Array(2048) } });
    await expect(evaluateNpz(noSigma, samPath, { inception: net })).rejects.toThrow('has mu but no sigma');
    const badMu = await bad('badmu.npz', {
      arr_0: u8([5, 8, 8, 3], new Uint8Array(960)),
      mu: { dtype: 'float64', shape: [10], data: new Float64Array(10) },
      sigma: { dtype: 'float64', shape: [10, 10], data: new Float64Array(100) },
      mu_s: { dtype: 'float64', shape: [10], data: new Float64Array(10) },
      sigma_s: { dtype: 'float64', shape: [10, 10], data: new Float64Array(100) },
    });
    await expect(evaluateNpz(badMu, samPath, { inception: net })).rejects.toThrow('mu has shape (10,), expected (2048,)');

    // truncated: the zip directory (at the end) is gone, or the images are cut short
    const cut = join(tmp, 'cut.npz');
    writeFileSync(cut, readFileSync(samPath));
    truncateSync(cut, Math.floor(statSync(cut).size / 2));
    await expect(evaluateNpz(refPath, cut, { inception: net })).rejects.toThrow(cut);
    const empty = join(tmp, 'empty.npz');
    writeFileSync(empty, '');
    await expect(evaluateNpz(refPath, empty, { inception: net })).rejects.toThrow(empty);
  });
});

describe('rargen fid', () => {
  it('prints the five metrics as JSON with --json, or as ADM prints them', async () => {
    const j = await capture(['fid', refPath, samPath, '--inception', weights, '--device', 'cpu', '--batch-size', '3', '--json']);
    expect(j.code, j.err).toBe(0);
    const parsed = JSON.parse(j.out) as Record<string, number>;
    expect(Object.keys(parsed)).toEqual(['fid', 'sfid', 'inception_score', 'precision', 'recall']);
    for (const v of Object.values(parsed)) expect(Number.isFinite(v)).toBe(true);
    expect(j.err).toContain('6 reference and 5 sample images on cpu');
    const text = formatResult({ fid: 1.5, sfid: 2.25, inceptionScore: 100.125, precision: 0.75, recall: 0.5 }, false);
    expect(text).toBe('Inception Score: 100.125\nFID: 1.5\nsFID: 2.25\nPrecision: 0.75\nRecall: 0.5\n');
  });

  it('says where to get the weights and where to put them when they are missing', async () => {
    const cache = join(tmp, 'empty-cache');
    expect(() => findInceptionWeights(undefined, { RARGEN_CACHE: cache })).toThrow(
      /rargen download inception.*https:\/\/github\.com\/toshas\/torch-fidelity\/releases\/download\/v0\.2\.0\/weights-inception-2015-12-05-6726825d\.pth.*empty-cache\/weights-inception-2015-12-05-6726825d\.pth/s,
    );
    const old = process.env.RARGEN_CACHE;
    process.env.RARGEN_CACHE = cache;
    try {
      const r = await capture(['fid', refPath, samPath]);
      expect(r.code).toBe(1);
      expect(r.err).toContain("run 'rargen download inception'");
      expect(r.err).toContain(join(cache, 'weights-inception-2015-12-05-6726825d.pth'));
      const bad = await capture(['fid', refPath]);
      expect(bad.code).toBe(2);
    } finally {
      if (old === undefined) delete process.env.RARGEN_CACHE;
      else process.env.RARGEN_CACHE = old;
    }
  });
});

describe('rargen download', () => {
  let server: Server;
  let base = '';
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/inception.pth') {
        res.writeHead(200, { 'content-length': String(statSync(weights).size) });
        createReadStream(weights).pipe(res);
      } else if (req.url === '/not-inception.pth') {
        res.writeHead(200);
        res.end(readFileSync(join(import.meta.dirname, '..', 'fixtures', 'rar-tiny', 'model.bin')));
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const a = server.address();
    base = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('downloads into the cache folder, checks the file and renames it into place', async () => {
    const cache = join(tmp, 'cache');
    const old = process.env.RARGEN_CACHE;
    process.env.RARGEN_CACHE = cache;
    try {
      const r = await capture(['download', 'inception', '--url', `${base}/inception.pth`]);
      expect(r.code, r.err).toBe(0);
      const dest = join(cache, 'weights-inception-2015-12-05-6726825d.pth');
      expect(readFileSync(dest).equals(readFileSync(weights))).toBe(true);
      expect(findInceptionWeights()).toBe(dest);
      const again = await capture(['download', 'inception', '--url', `${base}/inception.pth`]);
      expect(again.err).toContain('already exists');
    } finally {
      if (old === undefined) delete process.env.RARGEN_CACHE;
      else process.env.RARGEN_CACHE = old;
    }
  });

  it('keeps nothing when the file is not the Inception state dict or the server fails', async () => {
    const out = join(tmp, 'dl', 'x.pth');
    const wrong = await capture(['download', 'inception', '--url', `${base}/not-inception.pth`, '--out', out]);
    expect(wrong.code).toBe(1);
    expect(wrong.err).toContain('is not the FID Inception state dict');
    expect(existsSync(out)).toBe(false);
    const missing = await capture(['download', 'inception', '--url', `${base}/nothing`, '--out', out]);
    expect(missing.code).toBe(1);
    expect(missing.err).toContain('HTTP 404');
    expect(existsSync(out)).toBe(false);
    const unknown = await capture(['download', 'everything']);
    expect(unknown.code).toBe(2);
  });
});
