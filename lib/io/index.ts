// lib/io: checkpoint and array formats (torch zip/legacy, safetensors, npy/npz).
export { openCheckpoint, sniffFormat, type CheckpointFormat } from './checkpoint.js';
export { openTorchZip, openTorchLegacy, saveTorch, type SaveTorchOptions, type LazyTensor, type TensorInput, type TensorsInput } from './torch.js';
export { openSafetensors, saveSafetensors, type SaveSafetensorsOptions } from './safetensors.js';
export {
  readNpy,
  writeNpy,
  readNpz,
  writeNpz,
  openNpy,
  openNpz,
  NpyFile,
  NpzFile,
  NpyReader,
  NpzStreamWriter,
  parseNpyHeader,
  encodeNpyHeader,
  type NpyArray,
  type NpyDType,
  type NpyHeader,
  type ArraysInput,
  type NpzWriteOptions,
} from './npy.js';
export { RargenIOError } from './errors.js';
export { float16ToFloat32, bfloat16ToFloat32, float32ToFloat16, float32ToBfloat16, f32ToF16Bits, f32ToBf16Bits, float16Table, DTYPE_SIZE } from './dtype.js';
export { lazyTensors } from './convert.js';
