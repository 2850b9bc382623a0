// The single entry point for weights: openCheckpoint(path) sniffs the format from the
// first bytes (zip "PK" = torch >= 1.6, 0x80 pickle protocol byte = legacy torch.save,
// u64 header length + '{' = safetensors) and returns a lazy Checkpoint (lib/tensor.ts).
// Only the index is read at open; tensors are read one at a time by offset.
import type { Checkpoint } from '../tensor.js';
import { ioFail } from './errors.js';
import { RandomAccessFile } from './file.js';
import { openSafetensors } from './safetensors.js';
import { openTorchLegacy, openTorchZip } from './torch.js';

export type CheckpointFormat = Checkpoint['format'];

/** Guess the format of a checkpoint from its first bytes (and size). */
export function sniffFormat(head: Uint8Array, size: number): CheckpointFormat | null {
  if (head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && ((head[2] === 3 && head[3] === 4) || (head[2] === 5 && head[3] === 6))) return 'torch-zip';
  if (head.length >= 2 && head[0] === 0x80 && head[1]! >= 2 && head[1]! <= 5) return 'torch-legacy';
  if (head.length >= 9) {
    const n = Buffer.from(head.buffer, head.byteOffset, 8).readBigUInt64LE(0);
    if (n > 0n && n <= BigInt(size - 8) && head[8] === 0x7b) return 'safetensors';
  }
  return null;
}

/** Open a torch (zip or legacy) or safetensors checkpoint lazily. */
export async function openCheckpoint(path: string): Promise<Checkpoint> {
  const f = await RandomAccessFile.open(path);
  let format: CheckpointFormat | null;
  try {
    const head = await f.read(0, Math.min(16, f.size), 'file header');
    format = sniffFormat(head, f.size);
    if (!format) {
      const hex = [...head.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
      ioFail(path, `unrecognised checkpoint format (first bytes: ${hex || 'none, the file is empty'}); expected a torch.save file (zip or legacy) or safetensors`);
    }
  } catch (e) {
    await f.close();
    throw e;
  }
  if (format === 'torch-zip') return openTorchZip(path, f);
  if (format === 'torch-legacy') return openTorchLegacy(path, f);
  return openSafetensors(path, f);
}

export { saveTorch, type SaveTorchOptions, type LazyTensor, type TensorInput, type TensorsInput } from './torch.js';
export { saveSafetensors, type SaveSafetensorsOptions } from './safetensors.js';
export { readNpz, writeNpz, readNpy, writeNpy } from './npy.js';
