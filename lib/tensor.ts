// The contract between checkpoint readers (lib/io/) and everything that consumes
// weights (configs, model loading, training, the CLI). Readers are lazy: opening a
// checkpoint parses only its index; tensor data is read from disk one tensor at a time.

export type DType = 'float32' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'uint8' | 'bool';

export type TypedArrayFor<D extends DType> = D extends 'float32'
  ? Float32Array
  : D extends 'float16' | 'bfloat16'
    ? Uint16Array
    : D extends 'int64'
      ? BigInt64Array
      : D extends 'int32'
        ? Int32Array
        : Uint8Array;

/** A host tensor: data in C order (row-major, contiguous). */
export interface HostTensor {
  dtype: DType;
  shape: number[];
  /** float16/bfloat16 are raw 16-bit patterns in a Uint16Array. */
  data: Float32Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array;
}

/** One tensor of a checkpoint, as its index describes it (no data read yet). */
export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Number of elements (product of shape). */
  numel: number;
}

/** An opened checkpoint (torch zip, torch legacy or safetensors). */
export interface Checkpoint {
  readonly path: string;
  readonly format: 'torch-zip' | 'torch-legacy' | 'safetensors';
  /** Tensors in file order, keyed by state-dict name. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Read one tensor in its stored dtype, materialised contiguous. */
  read(name: string): Promise<HostTensor>;
  /** Read one tensor converted to float32 (float16/bfloat16/float32 only). */
  readFloat32(name: string): Promise<Float32Array>;
  close(): Promise<void>;
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeToString(shape: readonly number[]): string {
  return '(' + shape.join(', ') + (shape.length === 1 ? ',' : '') + ')';
}
