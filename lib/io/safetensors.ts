// safetensors reading (lazy: the JSON header is parsed, tensors are read by offset on
// demand) and writing (streamed tensor by tensor, temp file + rename). Hand-written:
// the format is an 8-byte length, a JSON header and raw little-endian data; the npm
// packages read whole files into memory.
import type { Checkpoint, DType } from '../tensor.js';
import { numelOf, shapeToString } from '../tensor.js';
import { dataBytes, DTYPE_SIZE } from './dtype.js';
import { ioFail, wrapErrors } from './errors.js';
import { AtomicFile, RandomAccessFile, writeFully } from './file.js';
import { FileCheckpoint, checkGeometry, type LocatedTensor } from './reader.js';
import { checkTensorInputs, tensorData, tensorEntries, type TensorsInput } from './torch.js';

const ST_DTYPES: Record<string, DType> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16', I64: 'int64', I32: 'int32', U8: 'uint8', BOOL: 'bool' };
const ST_NAME: Record<DType, string> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16', int64: 'I64', int32: 'I32', uint8: 'U8', bool: 'BOOL' };
const MAX_HEADER = 100 * 1024 * 1024;

export async function openSafetensors(path: string, file?: RandomAccessFile): Promise<Checkpoint> {
  const f = file ?? (await RandomAccessFile.open(path));
  try {
    return await wrapErrors(path, 'reading the safetensors file', async () => {
      if (f.size < 8) ioFail(path, `safetensors file of ${f.size} bytes is too short for its 8-byte header length`);
      const lenBuf = await f.read(0, 8, 'safetensors header length');
      const big = lenBuf.readBigUInt64LE(0);
      if (big > BigInt(Math.min(MAX_HEADER, f.size - 8))) ioFail(path, `safetensors header length ${big} is larger than the file (${f.size} bytes) or the ${MAX_HEADER}-byte limit`);
      const hlen = Number(big);
      const text = (await f.read(8, hlen, 'safetensors header')).toString('utf8');
      let header: unknown;
      try {
        header = parseHeaderJson(text);
      } catch (e) {
        ioFail(path, `safetensors header is not valid JSON: ${(e as Error).message}`);
      }
      if (typeof header !== 'object' || header === null || Array.isArray(header)) ioFail(path, 'safetensors header is not a JSON object');
      const dataStart = 8 + hlen;
      const dataSize = f.size - dataStart;
      const located = new Map<string, LocatedTensor>();
      for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
        if (name === '__metadata__') {
          // the reference reader's type: a map of strings to strings
          if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.values(v).every((x) => typeof x === 'string')) {
            ioFail(path, 'safetensors __metadata__ must be an object of string values');
          }
          continue;
        }
        const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
        if (typeof e !== 'object' || e === null) ioFail(path, `tensor '${name}': header entry is not an object`);
        const dtype = typeof e.dtype === 'string' ? ST_DTYPES[e.dtype] : undefined;
        if (!dtype) ioFail(path, `tensor '${name}' has dtype ${JSON.stringify(e.dtype)}, which rargen does not load (supported: ${Object.keys(ST_DTYPES).join(', ')})`);
        if (!Array.isArray(e.shape)) ioFail(path, `tensor '${name}': shape is not an array`);
        const offs = e.data_offsets;
        if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0) || offs[0] > offs[1]) {
          ioFail(path, `tensor '${name}': bad data_offsets ${JSON.stringify(offs)}`);
        }
        const [b, en] = offs as [number, number];
        if (en > dataSize) ioFail(path, `tensor '${name}': data_offsets [${b}, ${en}] run past the end of the data (${dataSize} bytes); the file is truncated`);
        const es = DTYPE_SIZE[dtype];
        const g = checkGeometry(path, name, e.shape, null, 0, Math.floor((en - b) / es), `its data_offsets [${b}, ${en}]`);
        if (g.numel * es !== en - b) ioFail(path, `tensor '${name}': shape ${shapeToString(g.shape)} ${dtype} needs ${g.numel * es} bytes but data_offsets [${b}, ${en}] give ${en - b}`);
        const abs = dataStart + b;
        located.set(name, { name, dtype, shape: g.shape, numel: g.numel, stride: null, span: g.numel, bigEndian: false, base: async () => abs });
      }
      // file order = data order; as the spec and the reference reader require, the
      // tensors tile the data buffer exactly: no overlap, no gap, nothing after the last
      const sorted = new Map([...located.entries()].sort((x, y) => offsetOf(header, x[0]) - offsetOf(header, y[0]) || offsetOf(header, x[0], 1) - offsetOf(header, y[0], 1)));
      let end = 0;
      let prev = '';
      for (const name of sorted.keys()) {
        const [b, en] = [offsetOf(header, name), offsetOf(header, name, 1)];
        if (b < end) ioFail(path, `tensor '${name}': data_offsets [${b}, ${en}] overlap tensor '${prev}' (which ends at ${end})`);
        if (b > end) ioFail(path, `tensor '${name}': data_offsets [${b}, ${en}] leave a gap of ${b - end} bytes after ${prev ? `tensor '${prev}' (which ends at ${end})` : 'the header'}`);
        end = en;
        prev = name;
      }
      if (end !== dataSize) ioFail(path, `the tensors' data ends at byte ${end} of the data buffer but the file holds ${dataSize} bytes after the header (${dataSize - end} trailing bytes); the file is corrupt`);
      return new FileCheckpoint(path, 'safetensors', f, sorted);
    });
  } catch (e) {
    await f.close();
    throw e;
  }
}

function offsetOf(header: unknown, name: string, which: 0 | 1 = 0): number {
  return (header as Record<string, { data_offsets: [number, number] }>)[name]!.data_offsets[which];
}

/** A JSON number written with a fraction or exponent (`4.0`, `1e3`): not a valid size or offset. */
class JsonFloat {
  constructor(readonly text: string) {}
  toJSON(): string {
    return this.text;
  }
  toString(): string {
    return this.text;
  }
}

/**
 * Strict JSON for the header: as JSON.parse, except that a duplicate key is an error
 * (JSON.parse keeps the last silently, so a second entry for a tensor would hide the
 * first) and non-integer numbers come back as JsonFloat, so a shape of [4.0] is refused
 * as the reference reader refuses it. Nesting is capped at 64 levels.
 */
const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;

export function parseHeaderJson(text: string): unknown {
  let i = 0;
  const fail = (msg: string): never => {
    throw new Error(`${msg} at character ${i}`);
  };
  const ws = (): void => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  };
  const str = (): string => {
    // the closing quote (skipping escapes); JSON.parse then checks the escapes and controls
    let j = i + 1;
    while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
    if (j >= text.length) fail('unterminated string');
    const lit = text.slice(i, j + 1);
    i = j + 1;
    try {
      return JSON.parse(lit) as string;
    } catch {
      return fail('bad string');
    }
  };
  // recursion depth is capped at 64, so hostile nesting cannot exhaust the stack
  const value = (depth: number): unknown => {
    if (depth > 64) fail('nesting too deep');
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const o: Record<string, unknown> = {};
      ws();
      if (text[i] === '}') return i++, o;
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a string key');
        const k = str();
        if (Object.prototype.hasOwnProperty.call(o, k)) fail(`duplicate key ${JSON.stringify(k).slice(0, 200)}`);
        ws();
        if (text[i] !== ':') fail("expected ':'");
        i++;
        Object.defineProperty(o, k, { value: value(depth + 1), enumerable: true, writable: true, configurable: true });
        ws();
        if (text[i] === '}') return i++, o;
        if (text[i] !== ',') fail("expected ',' or '}'");
        i++;
      }
    }
    if (c === '[') {
      i++;
      const a: unknown[] = [];
      ws();
      if (text[i] === ']') return i++, a;
      for (;;) {
        a.push(value(depth + 1));
        ws();
        if (text[i] === ']') return i++, a;
        if (text[i] !== ',') fail("expected ',' or ']'");
        i++;
      }
    }
    if (c === '"') return str();
    for (const [w, v] of [['true', true], ['false', false], ['null', null]] as const) if (text.startsWith(w, i)) return (i += w.length), v;
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (!m) fail('unexpected token');
    i += m![0].length;
    return m![1] || m![2] ? new JsonFloat(m![0]) : Number(m![0]);
  };
  const root = value(0);
  ws();
  if (i < text.length) fail('trailing characters');
  return root;
}

export interface SaveSafetensorsOptions {
  /** String metadata stored under "__metadata__" (default {format: "pt"}). */
  metadata?: Record<string, string>;
}

/** Write a safetensors file, streaming tensor by tensor into a temp file renamed at the end. */
export async function saveSafetensors(path: string, tensors: TensorsInput, opts: SaveSafetensorsOptions = {}): Promise<void> {
  const entries = tensorEntries(tensors);
  checkTensorInputs(path, entries);
  const header: Record<string, unknown> = { __metadata__: opts.metadata ?? { format: 'pt' } };
  let off = 0;
  for (const [name, t] of entries) {
    if (name === '__metadata__') ioFail(path, "a tensor may not be named '__metadata__'");
    const n = numelOf(t.shape) * DTYPE_SIZE[t.dtype];
    header[name] = { dtype: ST_NAME[t.dtype], shape: [...t.shape], data_offsets: [off, off + n] };
    off += n;
  }
  let hb = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - ((8 + hb.length) % 8)) % 8; // data starts 8-byte aligned, as the reference writer does
  if (pad) hb = Buffer.concat([hb, Buffer.alloc(pad, 0x20)]);
  const out = await AtomicFile.create(path);
  try {
    await wrapErrors(path, 'writing the safetensors file', async () => {
      const lb = Buffer.alloc(8);
      lb.writeBigUInt64LE(BigInt(hb.length), 0);
      await writeFully(out.fh, lb, 0);
      await writeFully(out.fh, hb, 8);
      let pos = 8 + hb.length;
      for (const [name, t] of entries) {
        const bytes = dataBytes(await tensorData(path, name, t));
        await writeFully(out.fh, bytes, pos);
        pos += bytes.byteLength;
      }
      await out.commit();
    });
  } catch (e) {
    await out.abort();
    throw e;
  }
}
