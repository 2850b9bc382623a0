// The continuous-batching decode session (lib/session.ts, src/binding_session.cc,
// rargen::RarSession) on the fixtures' rar-tiny: every sequence's tokens equal
// generate() of that one image with the same options, byte for byte, whatever shares
// the batch (other classes and options, with and without guidance, other positions),
// when it was admitted, and what was cancelled around it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { generate, loadGenerator, type Generator } from '../../lib/generate.js';
import { DecodeSession, SessionFullError, type SequenceSpec } from '../../lib/session.js';
import { ValidationError } from '../../lib/errors.js';
import { FIXTURES } from './helpers.js';

const N = 16; // rar-tiny image_seq_len

async function reference(gen: Generator, s: SequenceSpec): Promise<number[]> {
  const { classId, index, ...rest } = s;
  const r = await generate({ generator: gen, classLabels: [classId], indexOffset: index ?? 0, ...rest });
  return Array.from(r.tokens[0]!);
}

// Runs the session until every sequence is done; `admit[k]` is added before step k.
async function drive(session: DecodeSession, admit: SequenceSpec[][], cancelAt: Map<number, number> = new Map()) {
  const ids: number[] = [];
  const specs = new Map<number, SequenceSpec>();
  const out = new Map<number, number[]>();
  const counts = new Map<number, number>();
  for (let k = 0; ; k++) {
    for (const s of admit[k] ?? []) {
      const id = session.add(s);
      ids.push(id);
      specs.set(id, s);
    }
    for (const [pos, step] of cancelAt) if (step === k && ids[pos] !== undefined) session.cancel(ids[pos]!);
    if (session.active === 0 && k >= admit.length) break;
    const r = await session.step();
    for (const p of r.progressed) {
      // one token per sequence per step
      expect(p.tokens).toBe((counts.get(p.id) ?? 0) + 1);
      counts.set(p.id, p.tokens);
    }
    for (const f of r.finished) {
      expect(f.tokens.length).toBe(N);
      out.set(f.id, Array.from(f.tokens));
    }
    if (k > 10 * N) throw new Error('session did not drain');
  }
  return { ids, specs, out };
}

describe('DecodeSession (rar-tiny)', () => {
  let gen: Generator;
  beforeAll(async () => {
    gen = await loadGenerator(join(FIXTURES, 'rar-tiny', 'model.bin'), { device: 'cpu' });
  });
  afterAll(() => gen?.dispose());

  const mixed: SequenceSpec[] = [
    { classId: 3, seed: 7, guidanceScale: 3, guidanceScalePow: 1, temperature: 1.2 },
    { classId: 0, seed: 7, index: 1, guidanceScale: 0, temperature: 0.9 },
    { classId: 9, seed: 11n, index: 5, guidanceScale: 4, guidanceScalePow: 2.5, topK: 8 },
    { classId: 3, seed: 7, guidanceScale: 3, guidanceScalePow: 1, temperature: 1.2, index: 2 },
    { classId: 5, seed: 2, greedy: true, guidanceScale: 2 },
    { classId: 1, seed: 2, topP: 0.7, temperature: 1.5 },
    { classId: 7, seed: 99, index: 123456, guidanceScale: 1.5, guidanceScalePow: 0.5, topK: 5, topP: 0.9 },
    { classId: 2, seed: 0, greedy: true },
    { classId: 8, seed: 31, guidanceScale: 6, temperature: 0.7 },
    { classId: 4, seed: 13, index: 3, guidanceScale: 0 },
  ];

  it('staggered admission with mixed options: tokens equal generate() per sequence', async () => {
    const session = DecodeSession.create(gen, { maxRows: 16 });
    try {
      expect(session.maxRows).toBe(16);
      // 3 at step 0, then one at steps 1, 2, 5, 9, 15, 16, 17 (positions differ by up to 16)
      const admit: SequenceSpec[][] = [];
      admit[0] = mixed.slice(0, 3);
      [1, 2, 5, 9, 15, 16, 17].forEach((k, i) => (admit[k] = [mixed[3 + i]!]));
      for (let k = 0; k < admit.length; k++) admit[k] ??= [];
      const { ids, specs, out } = await drive(session, admit);
      expect(out.size).toBe(mixed.length);
      for (const id of ids) expect(out.get(id)).toEqual(await reference(gen, specs.get(id)!));
      expect(session.freeRows).toBe(16);
      expect(session.active).toBe(0);
    } finally {
      session.dispose();
    }
  });

  it('rowsFor, freeRows and a full session', () => {
    const session = DecodeSession.create(gen, { maxRows: 3 });
    try {
      expect(session.rowsFor({ classId: 1, guidanceScale: 2 })).toBe(2);
      expect(session.rowsFor({ classId: 1, guidanceScale: 0 })).toBe(1);
      session.add({ classId: 1, guidanceScale: 2 });
      expect(session.freeRows).toBe(1);
      let err: unknown;
      try {
        session.add({ classId: 2, guidanceScale: 2 });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(SessionFullError);
      expect((err as SessionFullError).code).toBe('RARGEN_SESSION_FULL');
      expect((err as Error).message).toMatch(/needs 2 rows but 1 of 3 are free/);
      session.add({ classId: 2, guidanceScale: 0 });
      expect(session.freeRows).toBe(0);
      expect(session.active).toBe(2);
      expect(() => session.add({ classId: 2, guidanceScale: 0 })).toThrow(SessionFullError);
    } finally {
      session.dispose();
    }
  });

  it('cancel frees rows now (between steps) or at the end of a running step, and disturbs no one', async () => {
    const session = DecodeSession.create(gen, { maxRows: 8 });
    try {
      const specs = [mixed[0]!, mixed[1]!, mixed[2]!, mixed[4]!];
      const ids = specs.map((s) => session.add(s));
      for (let k = 0; k < 4; k++) await session.step();
      // between steps: rows free at once
      const before = session.freeRows;
      session.cancel(ids[0]!);
      expect(session.freeRows).toBe(before + 2);
      expect(session.active).toBe(3);
      session.cancel(ids[0]!); // again: ignored
      session.cancel(12345); // unknown: ignored
      // during a step: freed when it ends
      const running = session.step();
      session.cancel(ids[2]!);
      const r = await running;
      expect(r.progressed.map((p) => p.id)).not.toContain(ids[2]);
      expect(session.freeRows).toBe(before + 4);
      // a newcomer reuses the freed rows
      const late = mixed[8]!;
      const lateId = session.add(late);
      const out = new Map<number, number[]>();
      while (session.active > 0) for (const f of (await session.step()).finished) out.set(f.id, Array.from(f.tokens));
      expect([...out.keys()].sort()).toEqual([ids[1]!, ids[3]!, lateId].sort());
      expect(out.get(ids[1]!)).toEqual(await reference(gen, specs[1]!));
      expect(out.get(ids[3]!)).toEqual(await reference(gen, specs[3]!));
      expect(out.get(lateId)).toEqual(await reference(gen, late));
      expect(session.freeRows).toBe(8);
    } finally {
      session.dispose();
    }
  });

  it('step with nothing active resolves empty; interleaves with generate()', async () => {
    const session = DecodeSession.create(gen, { maxRows: 4 });
    try {
      expect(await session.step()).toEqual({ progressed: [], finished: [] });
      const id = session.add(mixed[6]!);
      const [a, b] = await Promise.all([session.step(), reference(gen, mixed[6]!)]);
      expect(a.progressed).toEqual([{ id, tokens: 1 }]);
      let tokens: Int32Array | undefined;
      while (!tokens) tokens = (await session.step()).finished.find((f) => f.id === id)?.tokens;
      expect(Array.from(tokens)).toEqual(b);
    } finally {
      session.dispose();
    }
  });

  it('rejects bad specs with a ValidationError naming the field', () => {
    const session = DecodeSession.create(gen, { maxRows: 4 });
    try {
      const bad: [unknown, RegExp][] = [
        [{ classId: 10 }, /integer between 0 and 9 for classId but received 10/],
        [{ classId: 1.5 }, /classId/],
        [{}, /classId but received undefined/],
        [{ classId: 1, temperature: 0 }, /finite number > 0 for temperature/],
        [{ classId: 1, topP: 1.5 }, /topP/],
        [{ classId: 1, topK: 33 }, /integer between 0 and 32 for topK/],
        [{ classId: 1, seed: -1 }, /seed/],
        [{ classId: 1, index: -2 }, /index/],
        [{ classId: 1, guidanceScale: Number.NaN }, /guidanceScale/],
        [{ classId: 1, greedy: 'yes' }, /boolean for greedy/],
        [{ classId: 1, batchSize: 4 }, /Unknown option batchSize/],
        [null, /sequence spec object/],
      ];
      for (const [spec, re] of bad) {
        expect(() => session.add(spec as SequenceSpec)).toThrow(ValidationError);
        expect(() => session.add(spec as SequenceSpec)).toThrow(re);
      }
      expect(session.active).toBe(0);
      expect(() => DecodeSession.create(gen, { maxRows: 0 })).toThrow(/integer between 1 and 4096 for maxRows/);
      expect(() => DecodeSession.create({} as Generator)).toThrow(ValidationError);
    } finally {
      session.dispose();
    }
  });

  it('dispose frees the session; later calls throw; idempotent', async () => {
    const session = DecodeSession.create(gen, { maxRows: 2 });
    session.add({ classId: 1 });
    await session.step();
    session.dispose();
    session.dispose();
    expect(() => session.add({ classId: 1 })).toThrow(/disposed/);
    expect(() => session.freeRows).toThrow(/disposed/);
    await expect(session.step()).rejects.toThrow(/disposed/);
    // the default maxRows comes from the memory budget
    const big = DecodeSession.create(gen);
    expect(big.maxRows).toBeGreaterThan(16);
    big.dispose();
  });

  it('disposing the generator disposes its sessions (KV memory freed), and later calls say why', async () => {
    const own = await loadGenerator(join(FIXTURES, 'rar-tiny', 'model.bin'), { device: 'cpu' });
    const a = DecodeSession.create(own, { maxRows: 2 });
    const b = DecodeSession.create(own, { maxRows: 2 });
    a.add({ classId: 1 });
    const queued = a.step(); // waits for its turn on the generator; disposed meanwhile: refused, not run on freed memory
    b.dispose(); // a session disposed first is not disposed again
    own.dispose();
    await expect(queued).rejects.toThrow('DecodeSession.step: the session was disposed (its generator was disposed)');
    expect(() => a.add({ classId: 2 })).toThrow('DecodeSession.add: the session was disposed (its generator was disposed)');
    await expect(a.step()).rejects.toThrow('DecodeSession.step: the session was disposed (its generator was disposed)');
    expect(() => b.freeRows).toThrow(/^DecodeSession.freeRows: the session was disposed$/);
    expect(() => DecodeSession.create(own)).toThrow(/generator was disposed/);
  });
});
