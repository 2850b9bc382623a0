// Bridges an opened checkpoint to the writers without loading it whole: each tensor is
// read only when the writer reaches it (e.g. torch -> safetensors conversion).
import type { Checkpoint } from '../tensor.js';
import type { LazyTensor } from './torch.js';

export function lazyTensors(ckpt: Checkpoint): Map<string, LazyTensor> {
  const out = new Map<string, LazyTensor>();
  for (const [name, info] of ckpt.tensors) {
    out.set(name, { dtype: info.dtype, shape: info.shape, load: async () => (await ckpt.read(name)).data });
  }
  return out;
}
