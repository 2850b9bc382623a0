// The lazy Checkpoint implementation shared by the torch (zip, legacy) and safetensors
// readers: an index of tensors, each located by an absolute file offset, read on demand
// with positional reads straight into the destination typed array (no intermediate copy
// for contiguous tensors; strided tensors read their span once and are gathered).
import type { Checkpoint, DType, HostTensor, TensorInfo } from '../tensor.js';
import { shapeToString } from '../tensor.js';
import { allocFor, bfloat16ToFloat32, byteswapInPlace, dataBytes, DTYPE_SIZE, float16ToFloat32 } from './dtype.js';
import { ioFail, wrapErrors } from './errors.js';
import type { RandomAccessFile } from './file.js';
import { limit, overLimit } from './limits.js';

export interface LocatedTensor extends TensorInfo {
  /** Absolute file offset of the tensor's first element (resolved lazily, e.g. a zip local header). */
  base: () => Promise<number>;
  /** Element strides; null when the tensor is contiguous in C order. */
  stride: number[] | null;
  /** Elements spanned from the first element to the last (strided tensors). */
  span: number;
  bigEndian: boolean;
}

export class FileCheckpoint implements Checkpoint {
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  private closed = false;
  /** Reused staging buffer for float16/bfloat16 -> float32 reads (one in flight at a time). */
  private scratch: Uint16Array | null = null;
  private scratchBusy = false;

  constructor(
    readonly path: string,
    readonly format: Checkpoint['format'],
    private readonly file: RandomAccessFile,
    private readonly located: ReadonlyMap<string, LocatedTensor>,
    private readonly onClose: () => Promise<void> = () => file.close(),
  ) {
    const infos = new Map<string, TensorInfo>();
    for (const [k, t] of located) infos.set(k, { name: t.name, dtype: t.dtype, shape: t.shape.slice(), numel: t.numel });
    this.tensors = infos;
  }

  private get(name: string): LocatedTensor {
    if (this.closed) ioFail(this.path, `checkpoint is closed (reading tensor '${name}')`);
    const t = this.located.get(name);
    if (!t) {
      const some = [...this.located.keys()].slice(0, 8).join(', ');
      ioFail(this.path, `no tensor named '${name}' in the checkpoint (it has ${this.located.size}: ${some}${this.located.size > 8 ? ', ...' : ''})`);
    }
    return t;
  }

  async read(name: string): Promise<HostTensor> {
    const t = this.get(name);
    const data = allocFor(t.dtype, t.numel);
    await this.readRaw(t, dataBytes(data));
    return { dtype: t.dtype, shape: t.shape.slice(), data };
  }

  /** Fill `out` (numel x element size bytes) with the tensor's elements in C order. */
  private async readRaw(t: LocatedTensor, out: Uint8Array): Promise<void> {
    if (t.numel === 0) return;
    await wrapErrors(this.path, `reading tensor '${t.name}'`, async () => {
      const es = DTYPE_SIZE[t.dtype];
      const base = await t.base();
      const what = `tensor '${t.name}' ${t.dtype} ${shapeToString(t.shape)}`;
      if (t.stride === null) {
        await this.file.readInto(out, base, what);
      } else {
        const span = await this.file.read(base, t.span * es, what);
        gather(span, out, t.shape, t.stride, es);
      }
      if (t.bigEndian) byteswapInPlace(out, es);
    });
  }

  async readFloat32(name: string): Promise<Float32Array> {
    const t = this.get(name);
    if (t.dtype !== 'float32' && t.dtype !== 'float16' && t.dtype !== 'bfloat16') {
      ioFail(this.path, `tensor '${name}' is ${t.dtype}; readFloat32 converts only float32/float16/bfloat16 (use read())`);
    }
    if (t.dtype === 'float32') return (await this.read(name)).data as Float32Array;
    // 16-bit: read into a reused staging buffer, convert into the result; so loading a
    // float16 checkpoint allocates only the float32 output, not a garbage copy per tensor.
    let buf: Uint16Array;
    const own = !this.scratchBusy;
    if (own) {
      this.scratchBusy = true;
      if (!this.scratch || this.scratch.length < t.numel) this.scratch = new Uint16Array(t.numel);
      buf = this.scratch.subarray(0, t.numel);
    } else buf = new Uint16Array(t.numel);
    try {
      await this.readRaw(t, dataBytes(buf));
      return t.dtype === 'float16' ? float16ToFloat32(buf) : bfloat16ToFloat32(buf);
    } finally {
      if (own) this.scratchBusy = false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.scratch = null;
    await this.onClose();
  }
}

/** Copy a strided tensor (element `es` bytes) out of `src` (starting at its first element) into C order. */
export function gather(src: Uint8Array, dst: Uint8Array, shape: readonly number[], stride: readonly number[], es: number): void {
  const nd = shape.length;
  const numel = dst.length / es;
  if (numel === 0) return;
  // innermost run: contiguous when the last stride is 1
  const last = nd ? shape[nd - 1]! : 1;
  const lastStride = nd ? stride[nd - 1]! : 1;
  const idx = new Array<number>(Math.max(nd - 1, 0)).fill(0);
  let srcOff = 0; // in elements
  let d = 0;
  const rows = numel / last;
  for (let r = 0; r < rows; r++) {
    if (lastStride === 1) {
      dst.set(src.subarray(srcOff * es, (srcOff + last) * es), d);
      d += last * es;
    } else {
      for (let j = 0, s = srcOff * es; j < last; j++, s += lastStride * es) {
        for (let b = 0; b < es; b++) dst[d++] = src[s + b]!;
      }
    }
    // advance the outer index (odometer)
    for (let k = nd - 2; k >= 0; k--) {
      idx[k]!++;
      srcOff += stride[k]!;
      if (idx[k]! < shape[k]!) break;
      srcOff -= stride[k]! * shape[k]!;
      idx[k] = 0;
    }
  }
}

/**
 * Validate a tensor's geometry against its storage. Returns the contiguity and the
 * number of storage elements it spans from its first element. Errors name the tensor.
 * A view that repeats stored elements (a stride of 0, as `expand` makes, or overlapping
 * strides) materialises more bytes than the file holds: torch keeps such a view, this
 * reader copies it out, so past the `expandedBytes` cap it is refused before allocating.
 */
export function checkGeometry(
  file: string,
  name: string,
  shape: unknown[],
  stride: unknown[] | null,
  offset: unknown,
  storageNumel: number,
  storageWhat: string,
  elementSize = 1,
): { shape: number[]; stride: number[] | null; numel: number; span: number; offset: number } {
  const bad = (msg: string): never => ioFail(file, `tensor '${name}': ${msg}`);
  if (shape.length > 64) bad(`${shape.length} dimensions is too many`);
  const shp: number[] = [];
  for (const s of shape) {
    if (typeof s !== 'number' || !Number.isSafeInteger(s) || s < 0) bad(`bad shape (${shape.map(String).join(', ')}): sizes must be non-negative integers`);
    shp.push(s as number);
  }
  let numel = 1;
  for (const s of shp) {
    numel *= s;
    if (numel > Number.MAX_SAFE_INTEGER) bad(`shape ${shapeToString(shp)} has too many elements`);
  }
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) bad(`bad storage offset ${String(offset)}`);
  const off = offset as number;
  let str: number[] | null = null;
  let span = numel;
  if (stride !== null) {
    if (stride.length !== shp.length) bad(`stride has ${stride.length} entries but shape ${shapeToString(shp)} has ${shp.length}`);
    const st: number[] = [];
    for (const s of stride) {
      if (typeof s !== 'number' || !Number.isSafeInteger(s) || s < 0) bad(`bad stride (${stride.map(String).join(', ')})`);
      st.push(s as number);
    }
    // contiguous iff strides match C order on every dimension of size > 1
    let expect = 1;
    let contiguous = true;
    for (let k = shp.length - 1; k >= 0; k--) {
      if (shp[k]! > 1 && st[k] !== expect) contiguous = false;
      expect *= shp[k]!;
    }
    if (numel === 0) span = 0;
    else {
      let last = 0;
      for (let k = 0; k < shp.length; k++) last += (shp[k]! - 1) * st[k]!;
      if (!Number.isSafeInteger(last)) bad('strides overflow');
      span = last + 1;
    }
    if (!contiguous) str = st;
  }
  if (numel > span && numel * elementSize > limit('expandedBytes')) {
    bad(
      `shape ${shapeToString(shp)} stride (${(stride ?? []).join(', ')}) repeats ${span} stored elements as ${numel}; materialising it takes ${numel * elementSize} bytes, ${overLimit('expandedBytes')}; or save the tensor with .contiguous().clone()`,
    );
  }
  if (numel > 0 && off + span > storageNumel) {
    bad(
      `shape ${shapeToString(shp)}${stride ? ` stride (${stride.join(', ')})` : ''} at storage offset ${off} needs ${off + span} elements, but ${storageWhat} has only ${storageNumel}`,
    );
  }
  return { shape: shp, stride: str, numel, span, offset: off };
}

export type { DType };
