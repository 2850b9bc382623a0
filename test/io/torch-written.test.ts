// Files written by torch 2.14 itself (test/fixtures/torch-io, see its README): zip and
// legacy formats, protocols 2 and 4, shared storages, views, every dtype. Each tensor
// must equal numpy's contiguous copy in ref.npz bit for bit.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint, readNpz } from '../../lib/io/index.js';
import { expectSameData } from '../helpers/same.js';

const DIR = join(import.meta.dirname, '..', 'fixtures', 'torch-io');

describe('checkpoints written by torch 2.14', () => {
  it.each([
    ['t_zip.pt', 'torch-zip'],
    ['t_nested.pt', 'torch-zip'],
    ['t_legacy.pt', 'torch-legacy'],
    ['t_legacy_p4.pt', 'torch-legacy'],
  ])('%s', async (file, format) => {
    const ref = await readNpz(join(DIR, 'ref.npz'));
    const ck = await openCheckpoint(join(DIR, file));
    try {
      expect(ck.format).toBe(format);
      expect([...ck.tensors.keys()]).toEqual([...ref.keys()]);
      const dtypes = Object.fromEntries([...ck.tensors].map(([k, v]) => [k, v.dtype]));
      expect(dtypes).toEqual({ w: 'float32', wT: 'float32', row: 'float32', col: 'float32', h: 'float16', bf: 'bfloat16', step: 'int64', i32: 'int32', u8: 'uint8', mask: 'bool', exp: 'float32', p: 'float32' });
      for (const [k, r] of ref) {
        expect(ck.tensors.get(k)!.shape, k).toEqual(r.shape);
        const float = ['float32', 'float16', 'bfloat16'].includes(dtypes[k]!);
        expectSameData(float ? await ck.readFloat32(k) : (await ck.read(k)).data, r.data, k);
      }
      expect((await ck.read('step')).data).toEqual(BigInt64Array.from([123456789012n]));
    } finally {
      await ck.close();
    }
  });
});
