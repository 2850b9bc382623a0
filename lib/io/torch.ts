// PyTorch `torch.save` checkpoints: reading the zip format (torch >= 1.6) and the legacy
// format (pickles followed by raw storages), and writing the zip format. Hand-written on
// top of zip.ts and pickle.ts: files are up to ~6 GB, so we parse only the zip central
// directory / the leading pickles and read each tensor by (offset, length) on demand;
// the pickle goes through a restricted unpickler that can build tensors and nothing else.
import type { Checkpoint, DType, HostTensor } from '../tensor.js';
import { numelOf, shapeToString } from '../tensor.js';
import { checkDataMatches, dataBytes, isDType } from './dtype.js';
import { ioFail, RargenIOError, wrapErrors } from './errors.js';
import { RandomAccessFile } from './file.js';
import { PickleTruncatedError, PickleWriter, PyDict, PyGlobal, PyTuple, describe, unpickle, type GlobalSpec } from './pickle.js';
import { checkGeometry, FileCheckpoint, type LocatedTensor } from './reader.js';
import { ZipReader, ZipWriter, type ZipEntry } from './zip.js';

/** torch storage classes: dtype name and element size. dtypes rargen cannot hold are named for errors. */
const STORAGE_TYPES: Record<string, { dtype: string; size: number }> = {
  FloatStorage: { dtype: 'float32', size: 4 },
  HalfStorage: { dtype: 'float16', size: 2 },
  BFloat16Storage: { dtype: 'bfloat16', size: 2 },
  LongStorage: { dtype: 'int64', size: 8 },
  IntStorage: { dtype: 'int32', size: 4 },
  ByteStorage: { dtype: 'uint8', size: 1 },
  BoolStorage: { dtype: 'bool', size: 1 },
  DoubleStorage: { dtype: 'float64', size: 8 },
  CharStorage: { dtype: 'int8', size: 1 },
  ShortStorage: { dtype: 'int16', size: 2 },
  ComplexFloatStorage: { dtype: 'complex64', size: 8 },
  ComplexDoubleStorage: { dtype: 'complex128', size: 16 },
};
const STORAGE_NAME_FOR: Record<DType, string> = {
  float32: 'FloatStorage',
  float16: 'HalfStorage',
  bfloat16: 'BFloat16Storage',
  int64: 'LongStorage',
  int32: 'IntStorage',
  uint8: 'ByteStorage',
  bool: 'BoolStorage',
};

export const TORCH_LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL_VERSION = 1001;
const ALLOWED_HINT = '(only tensor and OrderedDict globals are)';

/** A storage as a persistent id describes it. */
class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: string,
    readonly size: number,
    /** Elements the storage (or legacy view) holds, as declared in the pickle. */
    readonly numel: number,
    /** Legacy storage views: element offset into the root storage. */
    readonly viewOffset: number,
  ) {}
}

class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: unknown,
    readonly shape: unknown[],
    readonly stride: unknown[] | null,
  ) {}
}

function asIntTuple(v: unknown, what: string, at: string, file: string): unknown[] {
  if (v instanceof PyTuple) return v.items;
  if (Array.isArray(v)) return v; // torch.Size pickles as a tuple, lists are tolerated
  throw new RargenIOError(file, `${file}: ${at}: tensor ${what} is a ${describe(v)}, not a tuple`);
}

function rebuildTensor(file: string) {
  return (args: unknown[], at: string): TensorRef => {
    if (args.length < 4) throw new RargenIOError(file, `${file}: ${at}: tensor rebuild with ${args.length} arguments (expected at least 4)`);
    const [storage, offset, size, stride] = args;
    if (!(storage instanceof StorageRef)) {
      throw new RargenIOError(file, `${file}: ${at}: tensor rebuild on a ${describe(storage)}, not a storage`);
    }
    return new TensorRef(storage, offset, asIntTuple(size, 'size', at, file), asIntTuple(stride, 'stride', at, file));
  };
}

function torchGlobals(file: string): Map<string, GlobalSpec> {
  const g = new Map<string, GlobalSpec>();
  const v2 = rebuildTensor(file);
  g.set('torch._utils._rebuild_tensor_v2', { call: v2 });
  g.set('torch._utils._rebuild_tensor', { call: v2 });
  const param = (args: unknown[], at: string): unknown => {
    if (!(args[0] instanceof TensorRef)) throw new RargenIOError(file, `${file}: ${at}: parameter rebuild on a ${describe(args[0])}, not a tensor`);
    return args[0];
  };
  g.set('torch._utils._rebuild_parameter', { call: param });
  g.set('torch._utils._rebuild_parameter_with_state', { call: param });
  g.set('collections.OrderedDict', {
    call: (args: unknown[], at: string): PyDict => {
      const d = new PyDict(true);
      if (args.length > 1) throw new RargenIOError(file, `${file}: ${at}: OrderedDict() with ${args.length} arguments`);
      if (args.length === 1) {
        const it = args[0];
        const pairs = it instanceof PyTuple ? it.items : Array.isArray(it) ? it : null;
        if (!pairs) throw new RargenIOError(file, `${file}: ${at}: OrderedDict(${describe(it)})`);
        for (const p of pairs) {
          const kv = p instanceof PyTuple ? p.items : Array.isArray(p) ? p : null;
          if (!kv || kv.length !== 2) throw new RargenIOError(file, `${file}: ${at}: OrderedDict item is a ${describe(p)}, not a pair`);
          d.map.set(kv[0], kv[1]);
        }
      }
      return d;
    },
  });
  for (const name of Object.keys(STORAGE_TYPES)) g.set(`torch.${name}`, {});
  return g;
}

function storageFromPid(file: string, pid: unknown, at: string, legacy: boolean, cache: Map<string, StorageRef>): StorageRef {
  const bad = (msg: string): never => {
    throw new RargenIOError(file, `${file}: ${at}: persistent id ${msg}`);
  };
  if (!(pid instanceof PyTuple)) bad(`is a ${describe(pid)}, not a tuple`);
  const items = (pid as PyTuple).items;
  if (items[0] !== 'storage') bad(`of type ${describe(items[0])} (only 'storage' is supported)`);
  if (items.length !== (legacy ? 6 : 5)) bad(`has ${items.length} fields (expected ${legacy ? 6 : 5})`);
  const [, type, key, , numel] = items;
  if (!(type instanceof PyGlobal) || type.module !== 'torch' || !(type.name in STORAGE_TYPES)) bad(`names storage type ${describe(type)}`);
  if (typeof key !== 'string' || key.length === 0 || key.length > 256) bad(`has a bad storage key ${describe(key)}`);
  if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) bad(`gives storage '${String(key)}' a bad size ${describe(numel)}`);
  const st = STORAGE_TYPES[(type as PyGlobal).name]!;
  const k = key as string;
  let root = cache.get(k);
  if (root && root.dtype !== st.dtype) bad(`uses storage '${k}' as ${st.dtype} and as ${root.dtype}`);
  if (!root) {
    root = new StorageRef(k, st.dtype, st.size, numel as number, 0);
    cache.set(k, root);
  }
  if (legacy && items[5] !== null) {
    // view_metadata = (view_key, offset, view_size)
    const vm = items[5];
    if (!(vm instanceof PyTuple) || vm.items.length !== 3) bad(`has bad view metadata ${describe(vm)}`);
    const [, voff, vsize] = (vm as PyTuple).items;
    if (typeof voff !== 'number' || typeof vsize !== 'number' || !Number.isSafeInteger(voff) || !Number.isSafeInteger(vsize) || voff < 0 || vsize < 0 || voff + vsize > root.numel) {
      bad(`has a storage view of '${k}' outside it (${describe(voff)}, ${describe(vsize)})`);
    }
    return new StorageRef(k, st.dtype, st.size, vsize as number, voff as number);
  }
  return root;
}

/**
 * The state dict inside an unpickled object. Rule: a top-level dict whose values are
 * all tensors is the state dict; otherwise, if exactly one of the keys 'state_dict',
 * 'model', 'module' holds a dict of tensors, that is it; anything else is an error.
 */
export function selectStateDict(file: string, root: unknown): Map<string, TensorRef> {
  const tensorDict = (v: unknown): Map<string, TensorRef> | null => {
    if (!(v instanceof PyDict)) return null;
    const out = new Map<string, TensorRef>();
    for (const [k, t] of v.map) {
      if (typeof k !== 'string' || !(t instanceof TensorRef)) return null;
      out.set(k, t);
    }
    return out;
  };
  const top = tensorDict(root);
  if (top) return top;
  if (root instanceof PyDict) {
    const found: [string, Map<string, TensorRef>][] = [];
    for (const key of ['state_dict', 'model', 'module']) {
      const d = root.map.has(key) ? tensorDict(root.map.get(key)) : null;
      if (d && d.size > 0) found.push([key, d]);
    }
    if (found.length === 1) return found[0]![1];
    const keys = [...root.map.keys()].slice(0, 12).map((k) => (typeof k === 'string' ? `'${k}'` : describe(k)));
    if (found.length > 1) ioFail(file, `the checkpoint holds several state dicts (${found.map((f) => `'${f[0]}'`).join(', ')}); rargen cannot tell which to load`);
    ioFail(file, `the checkpoint is a dict (keys ${keys.join(', ')}${root.map.size > 12 ? ', ...' : ''}) that is neither a dict of tensors nor holds one under 'state_dict', 'model' or 'module'`);
  }
  ioFail(file, `the checkpoint holds a ${describe(root)}, not a state dict (a dict of tensors)`);
}

interface StorageLocation {
  /** Absolute offset of the root storage's element 0. */
  base: () => Promise<number>;
  /** Elements actually present in the file for the root storage. */
  available: number;
}

function locateTensors(
  file: string,
  sd: Map<string, TensorRef>,
  storageAt: (s: StorageRef, tensor: string) => StorageLocation,
  bigEndian: boolean,
): Map<string, LocatedTensor> {
  const out = new Map<string, LocatedTensor>();
  for (const [name, t] of sd) {
    const s = t.storage;
    if (!isDType(s.dtype)) {
      ioFail(file, `tensor '${name}' has dtype ${s.dtype}, which rargen does not load (supported: float32, float16, bfloat16, int64, int32, uint8, bool)`);
    }
    const loc = storageAt(s, name);
    const g = checkGeometry(file, name, t.shape, t.stride, t.offset, Math.min(s.numel, loc.available - s.viewOffset), `its storage '${s.key}' (${s.dtype})`, s.size);
    const es = s.size;
    const skip = (s.viewOffset + g.offset) * es;
    out.set(name, {
      name,
      dtype: s.dtype,
      shape: g.shape,
      numel: g.numel,
      stride: g.stride,
      span: g.span,
      bigEndian,
      base: async () => (await loc.base()) + skip,
    });
  }
  return out;
}

/** Open a torch zip-format checkpoint (reads the central directory and data.pkl only). */
export async function openTorchZip(path: string, file?: RandomAccessFile): Promise<Checkpoint> {
  const f = file ?? (await RandomAccessFile.open(path));
  try {
    return await wrapErrors(path, 'reading the torch zip checkpoint', async () => {
      const zip = await ZipReader.open(f);
      const names = zip.names;
      let prefix: string | null = null;
      const first = names[0] ?? '';
      if (first.includes('/') && zip.entries.has(`${first.slice(0, first.indexOf('/'))}/data.pkl`)) {
        prefix = first.slice(0, first.indexOf('/'));
      } else {
        const cands = names.filter((n) => /^[^/]+\/data\.pkl$/.test(n));
        if (cands.length === 1) prefix = cands[0]!.slice(0, -'/data.pkl'.length);
      }
      if (prefix === null) {
        ioFail(path, `no '<archive>/data.pkl' zip entry; not a torch.save checkpoint (entries: ${names.slice(0, 6).join(', ')}${names.length > 6 ? ', ...' : ''})`);
      }
      let bigEndian = false;
      const bo = zip.entries.get(`${prefix}/byteorder`);
      if (bo) {
        const s = (await zip.readAll(bo, 64)).toString('latin1').trim();
        if (s === 'big') bigEndian = true;
        else if (s !== 'little') ioFail(path, `zip entry '${bo.name}' says byte order '${s.slice(0, 20)}' (expected little or big)`);
      }
      const pklEntry = zip.entry(`${prefix}/data.pkl`);
      const pkl = await zip.readAll(pklEntry, 1 << 30);
      const cache = new Map<string, StorageRef>();
      const { value } = unpickle(pkl, {
        file: path,
        what: `zip entry '${pklEntry.name}'`,
        globals: torchGlobals(path),
        allowedHint: ALLOWED_HINT,
        persistentLoad: (pid, at) => storageFromPid(path, pid, at, false, cache),
      });
      const sd = selectStateDict(path, value);
      const located = locateTensors(
        path,
        sd,
        (s, tensor) => {
          const name = `${prefix}/data/${s.key}`;
          const e: ZipEntry | undefined = zip.entries.get(name);
          if (!e) ioFail(path, `tensor '${tensor}': its storage '${s.key}' has no zip entry '${name}'`);
          if (e.method !== 0) ioFail(path, `tensor '${tensor}': zip entry '${name}' is compressed (method ${e.method}); torch.save writes stored entries and rargen reads only those`);
          if (e.size < s.numel * s.size) {
            ioFail(path, `tensor '${tensor}': storage '${s.key}' declares ${s.numel} ${s.dtype} elements (${s.numel * s.size} bytes) but zip entry '${name}' holds only ${e.size} bytes`);
          }
          return { base: () => zip.storedDataOffset(e, `tensor '${tensor}'`), available: Math.floor(e.size / s.size) };
        },
        bigEndian,
      );
      return new FileCheckpoint(path, 'torch-zip', f, located);
    });
  } catch (e) {
    await f.close();
    throw e;
  }
}

/** Open a legacy (pre-1.6, non-zip) torch checkpoint. Reads only the leading pickles and the 8-byte storage headers. */
export async function openTorchLegacy(path: string, file?: RandomAccessFile): Promise<Checkpoint> {
  const f = file ?? (await RandomAccessFile.open(path));
  try {
    return await wrapErrors(path, 'reading the legacy torch checkpoint', async () => {
      const MAX_PREFIX = 256 * 1024 * 1024;
      let len = Math.min(f.size, 1 << 20);
      for (;;) {
        const head = await f.read(0, len, 'legacy checkpoint pickles');
        try {
          return await parseLegacy(path, f, head);
        } catch (e) {
          if (!(e instanceof PickleTruncatedError) || len >= f.size) throw e;
          if (len >= MAX_PREFIX) ioFail(path, `legacy checkpoint pickles are longer than ${MAX_PREFIX} bytes`);
          len = Math.min(f.size, len * 4, MAX_PREFIX);
        }
      }
    });
  } catch (e) {
    await f.close();
    throw e;
  }
}

async function parseLegacy(path: string, f: RandomAccessFile, head: Buffer): Promise<Checkpoint> {
  const globals = torchGlobals(path);
  const base = { file: path, globals, allowedHint: ALLOWED_HINT };
  const magic = unpickle(head, { ...base, what: 'legacy magic number pickle', start: 0 });
  if (magic.value !== TORCH_LEGACY_MAGIC) {
    ioFail(path, `not a torch checkpoint: the first pickle holds ${describe(magic.value)}, not the legacy magic number 0x${TORCH_LEGACY_MAGIC.toString(16)}`);
  }
  const proto = unpickle(head, { ...base, what: 'legacy protocol-version pickle', start: magic.end });
  if (proto.value !== LEGACY_PROTOCOL_VERSION) ioFail(path, `legacy checkpoint protocol version ${describe(proto.value)} (expected ${LEGACY_PROTOCOL_VERSION})`);
  const sys = unpickle(head, { ...base, what: 'legacy sys-info pickle', start: proto.end });
  let bigEndian = false;
  if (sys.value instanceof PyDict && sys.value.map.get('little_endian') === false) bigEndian = true;
  const cache = new Map<string, StorageRef>();
  const main = unpickle(head, {
    ...base,
    what: 'legacy main pickle',
    start: sys.end,
    persistentLoad: (pid, at) => storageFromPid(path, pid, at, true, cache),
  });
  const keysP = unpickle(head, { ...base, what: 'legacy storage-keys pickle', start: main.end });
  const keys = keysP.value;
  if (!Array.isArray(keys) || keys.some((k) => typeof k !== 'string')) ioFail(path, `legacy storage-keys pickle holds a ${describe(keys)}, not a list of strings`);
  const sd = selectStateDict(path, main.value);
  // walk the storages: each is an int64 element count then the raw elements
  const where = new Map<string, { offset: number; count: number }>();
  let pos = keysP.end;
  for (const key of keys as string[]) {
    const s = cache.get(key);
    if (!s) ioFail(path, `legacy storage '${key}' at offset ${pos} is listed but no tensor in the pickle uses it (cannot tell its element size)`);
    const h = await f.read(pos, 8, `legacy storage '${key}' header`);
    const big = bigEndian ? h.readBigInt64BE(0) : h.readBigInt64LE(0);
    if (big < 0n || big > BigInt(f.size)) ioFail(path, `legacy storage '${key}' at offset ${pos} has a bad element count ${big}`);
    const count = Number(big);
    if (pos + 8 + count * s.size > f.size) {
      ioFail(path, `legacy storage '${key}' at offset ${pos} (${count} ${s.dtype} elements) runs past the end of the file (size ${f.size}); the file is truncated`);
    }
    where.set(key, { offset: pos + 8, count });
    pos += 8 + count * s.size;
  }
  const located = locateTensors(
    path,
    sd,
    (s, tensor) => {
      const w = where.get(s.key);
      if (!w) ioFail(path, `tensor '${tensor}': its storage '${s.key}' is not in the file's storage list`);
      if (w.count < s.numel + s.viewOffset) ioFail(path, `tensor '${tensor}': storage '${s.key}' holds ${w.count} elements but the pickle declares ${s.numel + s.viewOffset}`);
      const off = w.offset;
      return { base: async () => off, available: w.count };
    },
    bigEndian,
  );
  return new FileCheckpoint(path, 'torch-legacy', f, located);
}

// ---------------------------------------------------------------------------------
// Writing

/** A tensor whose data is produced only when the writer reaches it (streaming writes). */
export interface LazyTensor {
  dtype: DType;
  shape: readonly number[];
  load(): Promise<HostTensor['data']> | HostTensor['data'];
}
export type TensorInput = HostTensor | LazyTensor;
export type TensorsInput = ReadonlyMap<string, TensorInput> | Record<string, TensorInput> | Iterable<readonly [string, TensorInput]>;

export function tensorEntries(input: TensorsInput): [string, TensorInput][] {
  if (input instanceof Map) return [...(input as ReadonlyMap<string, TensorInput>).entries()];
  if (typeof (input as Iterable<unknown>)[Symbol.iterator] === 'function') return [...(input as Iterable<readonly [string, TensorInput]>)].map(([k, v]) => [k, v]);
  return Object.entries(input as Record<string, TensorInput>);
}

/** The data of a tensor input, checked against its dtype and shape. */
export async function tensorData(file: string, name: string, t: TensorInput): Promise<HostTensor['data']> {
  const data = 'load' in t ? await t.load() : t.data;
  if (!checkDataMatches(t.dtype, data)) ioFail(file, `tensor '${name}': data is a ${(data as object)?.constructor?.name} but dtype ${t.dtype} needs ${t.dtype === 'float16' || t.dtype === 'bfloat16' ? 'Uint16Array' : 'a matching typed array'}`);
  const n = numelOf(t.shape);
  if (data.length !== n) ioFail(file, `tensor '${name}': shape ${shapeToString(t.shape)} has ${n} elements but data has ${data.length}`);
  return data;
}

export function checkTensorInputs(file: string, entries: [string, TensorInput][]): void {
  const seen = new Set<string>();
  for (const [name, t] of entries) {
    if (typeof name !== 'string' || name.length === 0) ioFail(file, `tensor name ${JSON.stringify(name)} is empty`);
    if (seen.has(name)) ioFail(file, `tensor '${name}' given twice`);
    seen.add(name);
    if (!isDType(t.dtype)) ioFail(file, `tensor '${name}': unsupported dtype ${String(t.dtype)}`);
    for (const s of t.shape) if (!Number.isSafeInteger(s) || s < 0) ioFail(file, `tensor '${name}': bad shape ${shapeToString(t.shape)}`);
  }
}

export interface SaveTorchOptions {
  /** Folder name inside the zip (torch uses 'archive' or the file stem). */
  archiveName?: string;
  /** Test hook: zip64 threshold for the zip writer. */
  zip64Threshold?: number;
}

/**
 * Write a state dict as a torch zip-format checkpoint that `torch.load` reads
 * (also with weights_only=True): an OrderedDict of name -> tensor, one storage per
 * tensor, 64-byte aligned stored entries, written to a temp file and renamed.
 */
export async function saveTorch(path: string, tensors: TensorsInput, opts: SaveTorchOptions = {}): Promise<void> {
  const entries = tensorEntries(tensors);
  checkTensorInputs(path, entries);
  const arch = opts.archiveName ?? 'archive';
  if (!/^[A-Za-z0-9_.-]+$/.test(arch)) ioFail(path, `bad archive name '${arch}'`);
  const p = new PickleWriter().proto(2);
  p.global('collections', 'OrderedDict').emptyTuple().reduce();
  p.mark();
  entries.forEach(([name, t], i) => {
    const strides: number[] = [];
    let acc = 1;
    for (let k = t.shape.length - 1; k >= 0; k--) {
      strides[k] = acc;
      acc *= t.shape[k]!;
    }
    p.str(name);
    p.global('torch._utils', '_rebuild_tensor_v2');
    p.mark();
    p.mark().str('storage').global('torch', STORAGE_NAME_FOR[t.dtype]).str(String(i)).str('cpu').int(numelOf(t.shape)).tuple().binpersid();
    p.int(0).intTuple(t.shape).intTuple(strides).bool(false);
    p.global('collections', 'OrderedDict').emptyTuple().reduce();
    p.tuple().reduce();
  });
  p.setitems().stop();
  const zw = await ZipWriter.create(path, { align: 64, zip64Threshold: opts.zip64Threshold });
  try {
    await wrapErrors(path, 'writing the torch checkpoint', async () => {
      await zw.addEntry(`${arch}/data.pkl`, p.bytes());
      await zw.addEntry(`${arch}/byteorder`, Buffer.from('little'));
      for (let i = 0; i < entries.length; i++) {
        const [name, t] = entries[i]!;
        const data = await tensorData(path, name, t);
        await zw.addEntry(`${arch}/data/${i}`, dataBytes(data));
      }
      await zw.addEntry(`${arch}/version`, Buffer.from('3\n'));
      await zw.close();
    });
  } catch (e) {
    await zw.abort();
    throw e;
  }
}
