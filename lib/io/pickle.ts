// A restricted Python unpickler (and a tiny pickle emitter), hand-written. Why not a
// library: a checkpoint's pickle is code, and the only safe unpickler is one that can
// call nothing but an explicit allowlist of globals, each implemented here in
// TypeScript (torch's tensor rebuild functions, storage type tokens, OrderedDict).
// Any other GLOBAL (os.system, builtins.eval, torch.storage._load_from_bytes, ...) is
// refused when the opcode is read. It is a loop over an explicit stack (no recursion),
// with bounded memo, stack and integer sizes, so hostile input cannot blow up memory or
// the call stack. It covers protocols 0-5 as torch and numpy write them.
import { RargenIOError } from './errors.js';
import { limit, overLimit } from './limits.js';

/** A Python tuple (JS arrays stand for lists). */
export class PyTuple {
  constructor(readonly items: unknown[]) {}
}

/** A Python dict / OrderedDict; keys kept in insertion order. */
export class PyDict {
  readonly map = new Map<unknown, unknown>();
  /** The state a BUILD opcode set on it (torch stores `_metadata` there). */
  attrs: unknown = undefined;
  constructor(readonly ordered: boolean) {}
}

/**
 * A Python float. Kept apart from ints (JS numbers) so that a float where Python wants an
 * int (a tensor size of 4.0, which torch refuses) is not taken for one.
 */
export class PyFloat {
  constructor(readonly value: number) {}
  toString(): string {
    return Number.isInteger(this.value) ? this.value.toFixed(1) : String(this.value);
  }
}

/** A reference to an allowlisted global (a callable or a type token such as torch.FloatStorage). */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualname(): string {
    return `${this.module}.${this.name}`;
  }
}

export interface GlobalSpec {
  /** What REDUCE does with it; absent = a type token that may not be called. */
  call?: (args: unknown[], at: string) => unknown;
}

export interface UnpickleOptions {
  /** File name for error messages. */
  file: string;
  /** What is being unpickled, for error messages (e.g. "zip entry 'archive/data.pkl'"). */
  what: string;
  /** Allowed globals keyed by "module.name". */
  globals: ReadonlyMap<string, GlobalSpec>;
  /** Text appended to the refusal message, e.g. "(only tensor and OrderedDict globals are)". */
  allowedHint: string;
  /** Resolves persistent ids (PERSID/BINPERSID); absent = persistent ids are refused. */
  persistentLoad?: (pid: unknown, at: string) => unknown;
  /** Start offset in `data`. */
  start?: number;
  maxMemo?: number;
  maxStack?: number;
}

/** Raised when the data ends before STOP: for readers that can fetch more bytes and retry. */
export class PickleTruncatedError extends RargenIOError {
  override name = 'PickleTruncatedError';
  override readonly code: string = 'RARGEN_PICKLE_TRUNCATED';
}

const OPNAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT',
  0x4a: 'BININT', 0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID',
  0x51: 'BINPERSID', 0x52: 'REDUCE', 0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND', 0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT',
  0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET', 0x69: 'INST', 0x6a: 'LONG_BINGET',
  0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT', 0x72: 'LONG_BINPUT',
  0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1',
  0x86: 'TUPLE2', 0x87: 'TUPLE3', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4',
  0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES', 0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8',
  0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX',
  0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME', 0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

const MAX_LONG_BYTES = 64;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A short description of a value for error messages (never recursive). */
export function describe(v: unknown): string {
  if (v === null) return 'None';
  if (typeof v === 'string') return `str '${v.length > 60 ? v.slice(0, 60) + '...' : v}'`;
  if (typeof v === 'number' || typeof v === 'bigint') return `number ${v}`;
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (v instanceof PyFloat) return `float ${v}`;
  if (v instanceof PyTuple) return `tuple of ${v.items.length}`;
  if (Array.isArray(v)) return `list of ${v.length}`;
  if (v instanceof PyDict) return `${v.ordered ? 'OrderedDict' : 'dict'} of ${v.map.size}`;
  if (v instanceof PyGlobal) return `global ${v.qualname}`;
  if (v instanceof Uint8Array) return `bytes of ${v.length}`;
  if (v instanceof Set) return `set of ${v.size}`;
  if (typeof v === 'object' && v !== null) return (v as object).constructor?.name ?? 'object';
  return typeof v;
}

function intFromBigInt(b: bigint): number | bigint {
  return b <= MAX_SAFE && b >= -MAX_SAFE ? Number(b) : b;
}

function decodeLong(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
  if (bytes[bytes.length - 1]! & 0x80) v -= 1n << BigInt(8 * bytes.length);
  return intFromBigInt(v);
}

function unescapePyString(s: string): string {
  // protocol-0 STRING argument: a quoted Python repr. Enough of the escapes for real data.
  return s.replace(/\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[\\'"nrt0])/g, (_m, e: string) => {
    switch (e[0]) {
      case 'x':
      case 'u':
      case 'U':
        return String.fromCodePoint(parseInt(e.slice(1), 16));
      case 'n':
        return '\n';
      case 'r':
        return '\r';
      case 't':
        return '\t';
      case '0':
        return '\0';
      default:
        return e;
    }
  });
}

/** Unpickle one pickle from `data` (at `opts.start`). Returns the value and the offset after STOP. */
export function unpickle(data: Uint8Array, opts: UnpickleOptions): { value: unknown; end: number } {
  const file = opts.file;
  const maxMemo = opts.maxMemo ?? limit('pickleMemo');
  const maxStack = opts.maxStack ?? limit('pickleItems');
  const memoMsg = opts.maxMemo === undefined ? overLimit('pickleMemo') : `over the limit of ${maxMemo} entries`;
  const itemsMsg = opts.maxStack === undefined ? overLimit('pickleItems') : `over the limit of ${maxStack} items`;
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const n = buf.length;
  let pos = opts.start ?? 0;
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();
  let opPos = pos;
  let op = 0;

  const where = (): string => `${opts.what}: pickle opcode ${OPNAMES[op] ?? '0x' + op.toString(16).padStart(2, '0')} at offset ${opPos}`;
  const fail = (msg: string): never => {
    throw new RargenIOError(file, `${file}: ${where()}: ${msg}`);
  };
  const need = (k: number): number => {
    if (k < 0 || pos + k > n) {
      throw new PickleTruncatedError(file, `${file}: ${where()}: pickle data ends early (needs ${k} bytes at offset ${pos}, ${n - pos} left); the file is truncated or corrupt`);
    }
    const p = pos;
    pos += k;
    return p;
  };
  const readLine = (): string => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0 || end >= n) need(n - pos + 1);
    const s = buf.toString('latin1', pos, end);
    pos = end + 1;
    return s;
  };
  const push = (v: unknown): void => {
    if (stack.length >= maxStack) fail(`pickle stack grows past ${maxStack} items, ${itemsMsg}`);
    stack.push(v);
  };
  const pop = (): unknown => {
    if (stack.length === 0) fail('pickle stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail('pickle stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = marks.pop();
    if (!prev) fail('no MARK on the pickle stack');
    stack = prev!;
    return items;
  };
  const memoPut = (i: number): void => {
    if (memo.size >= maxMemo && !memo.has(i)) fail(`pickle memo grows past ${maxMemo} entries, ${memoMsg}`);
    memo.set(i, top());
  };
  const memoGet = (i: number): void => {
    if (!memo.has(i)) fail(`memo key ${i} is not defined`);
    push(memo.get(i));
  };
  const findGlobal = (module: string, name: string): PyGlobal => {
    const q = `${module}.${name}`;
    if (!opts.globals.has(q)) {
      const why = q === 'torch.storage._load_from_bytes' ? ' (it would run torch.load on embedded bytes)' : '';
      throw new RargenIOError(file, `refusing to load ${file}: pickle global '${q}'${why} is not allowed ${opts.allowedHint} [${opts.what}, offset ${opPos}]`);
    }
    return new PyGlobal(module, name);
  };
  const setItems = (d: unknown, items: unknown[]): void => {
    if (!(d instanceof PyDict)) fail(`SETITEM(S) on a ${describe(d)}, not a dict`);
    if (items.length % 2) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < items.length; i += 2) (d as PyDict).map.set(items[i], items[i + 1]);
  };
  const appendItems = (l: unknown, items: unknown[]): void => {
    if (!Array.isArray(l)) fail(`APPEND(S) on a ${describe(l)}, not a list`);
    for (const it of items) {
      if ((l as unknown[]).length >= maxStack) fail(`list grows past ${maxStack} items, ${itemsMsg}`);
      (l as unknown[]).push(it);
    }
  };
  const persistent = (pid: unknown): unknown => {
    if (!opts.persistentLoad) fail('persistent ids are not allowed here');
    return opts.persistentLoad!(pid, `${opts.what}, offset ${opPos}`);
  };
  const callGlobal = (f: unknown, args: unknown): unknown => {
    if (!(f instanceof PyGlobal)) fail(`REDUCE on a ${describe(f)}, not an allowed callable`);
    const g = f as PyGlobal;
    const spec = opts.globals.get(g.qualname);
    if (!spec?.call) fail(`pickle global '${g.qualname}' may not be called`);
    if (!(args instanceof PyTuple)) fail(`REDUCE arguments are a ${describe(args)}, not a tuple`);
    return spec!.call!((args as PyTuple).items, `${opts.what}, offset ${opPos}`);
  };

  for (;;) {
    opPos = pos;
    op = buf[need(1)]!;
    switch (op) {
      case 0x80: // PROTO
        if (buf[need(1)]! > 5) fail(`unsupported pickle protocol ${buf[pos - 1]}`);
        break;
      case 0x95: // FRAME
        need(8);
        break;
      case 0x2e: // STOP
        if (marks.length) fail('STOP with an open MARK');
        if (stack.length !== 1) fail(`STOP with ${stack.length} items on the stack (expected 1)`);
        return { value: stack[0], end: pos };
      case 0x28: // MARK
        if (marks.length >= maxStack) fail('too many MARKs');
        marks.push(stack);
        stack = [];
        break;
      case 0x30: // POP
        if (stack.length === 0) popMark();
        else stack.pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        push(top());
        break;
      case 0x4e: // NONE
        push(null);
        break;
      case 0x88:
        push(true);
        break;
      case 0x89:
        push(false);
        break;
      case 0x4b: // BININT1
        push(buf[need(1)]!);
        break;
      case 0x4d: // BININT2
        push(buf.readUInt16LE(need(2)));
        break;
      case 0x4a: // BININT
        push(buf.readInt32LE(need(4)));
        break;
      case 0x8a: {
        // LONG1
        const k = buf[need(1)]!;
        if (k > MAX_LONG_BYTES) fail(`integer of ${k} bytes is too large`);
        const p = need(k);
        push(decodeLong(buf.subarray(p, p + k)));
        break;
      }
      case 0x8b: {
        // LONG4
        const k = buf.readInt32LE(need(4));
        if (k < 0 || k > MAX_LONG_BYTES) fail(`integer of ${k} bytes is too large`);
        const p = need(k);
        push(decodeLong(buf.subarray(p, p + k)));
        break;
      }
      case 0x49: {
        // INT (text; I00/I01 are False/True)
        const s = readLine();
        if (s === '00') push(false);
        else if (s === '01') push(true);
        else {
          if (!/^[-+]?\d{1,40}$/.test(s)) fail(`bad INT literal '${s.slice(0, 40)}'`);
          push(intFromBigInt(BigInt(s)));
        }
        break;
      }
      case 0x4c: {
        // LONG (text)
        const s = readLine().replace(/L$/, '');
        if (!/^[-+]?\d{1,160}$/.test(s)) fail(`bad LONG literal '${s.slice(0, 40)}'`);
        push(intFromBigInt(BigInt(s)));
        break;
      }
      case 0x46: {
        const s = readLine();
        const v = Number(s);
        if (Number.isNaN(v) && !/nan/i.test(s)) fail(`bad FLOAT literal '${s.slice(0, 40)}'`);
        push(new PyFloat(v));
        break;
      }
      case 0x47: // BINFLOAT (big-endian double)
        push(new PyFloat(buf.readDoubleBE(need(8))));
        break;
      case 0x58: {
        // BINUNICODE
        const k = buf.readUInt32LE(need(4));
        const p = need(k);
        push(buf.toString('utf8', p, p + k));
        break;
      }
      case 0x8c: {
        const k = buf[need(1)]!;
        const p = need(k);
        push(buf.toString('utf8', p, p + k));
        break;
      }
      case 0x8d: {
        const k = Number(buf.readBigUInt64LE(need(8)));
        const p = need(k);
        push(buf.toString('utf8', p, p + k));
        break;
      }
      case 0x56: {
        // UNICODE (raw-unicode-escape, protocol 0)
        push(unescapePyString(readLine()));
        break;
      }
      case 0x53: {
        // STRING (quoted repr, protocol 0)
        const s = readLine();
        const q = s[0];
        if (s.length < 2 || (q !== "'" && q !== '"') || s[s.length - 1] !== q) fail('bad STRING literal');
        push(unescapePyString(s.slice(1, -1)));
        break;
      }
      case 0x54: {
        // BINSTRING (py2 str -> latin1)
        const k = buf.readInt32LE(need(4));
        const p = need(k);
        push(buf.toString('latin1', p, p + k));
        break;
      }
      case 0x55: {
        const k = buf[need(1)]!;
        const p = need(k);
        push(buf.toString('latin1', p, p + k));
        break;
      }
      case 0x42: {
        // BINBYTES
        const k = buf.readUInt32LE(need(4));
        const p = need(k);
        push(new Uint8Array(buf.subarray(p, p + k)));
        break;
      }
      case 0x43: {
        const k = buf[need(1)]!;
        const p = need(k);
        push(new Uint8Array(buf.subarray(p, p + k)));
        break;
      }
      case 0x8e:
      case 0x96: {
        const k = Number(buf.readBigUInt64LE(need(8)));
        const p = need(k);
        push(new Uint8Array(buf.subarray(p, p + k)));
        break;
      }
      case 0x5d: // EMPTY_LIST
        push([]);
        break;
      case 0x6c: // LIST
        push(popMark());
        break;
      case 0x61: {
        // APPEND
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x29:
        push(new PyTuple([]));
        break;
      case 0x74:
        push(new PyTuple(popMark()));
        break;
      case 0x85: {
        const a = pop();
        push(new PyTuple([a]));
        break;
      }
      case 0x86: {
        const b = pop();
        const a = pop();
        push(new PyTuple([a, b]));
        break;
      }
      case 0x87: {
        const c = pop();
        const b = pop();
        const a = pop();
        push(new PyTuple([a, b, c]));
        break;
      }
      case 0x7d:
        push(new PyDict(false));
        break;
      case 0x64: {
        // DICT
        const items = popMark();
        const d = new PyDict(false);
        setItems(d, items);
        push(d);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x8f:
        push(new Set());
        break;
      case 0x90: {
        // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof Set)) fail(`ADDITEMS on a ${describe(s)}`);
        for (const it of items) (s as Set<unknown>).add(it);
        break;
      }
      case 0x91:
        push(new Set(popMark()));
        break;
      case 0x70: {
        // PUT
        const s = readLine();
        if (!/^\d{1,10}$/.test(s)) fail('bad PUT index');
        memoPut(Number(s));
        break;
      }
      case 0x71:
        memoPut(buf[need(1)]!);
        break;
      case 0x72:
        memoPut(buf.readUInt32LE(need(4)));
        break;
      case 0x94:
        memoPut(memo.size);
        break;
      case 0x67: {
        const s = readLine();
        if (!/^\d{1,10}$/.test(s)) fail('bad GET index');
        memoGet(Number(s));
        break;
      }
      case 0x68:
        memoGet(buf[need(1)]!);
        break;
      case 0x6a:
        memoGet(buf.readUInt32LE(need(4)));
        break;
      case 0x63: {
        // GLOBAL
        const module = readLine();
        const name = readLine();
        push(findGlobal(module, name));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        push(findGlobal(module as string, name as string));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        const f = pop();
        push(callGlobal(f, args));
        break;
      }
      case 0x81: {
        // NEWOBJ: cls.__new__(cls, *args); only OrderedDict/dict-like allowlisted callables
        const args = pop();
        const cls = pop();
        push(callGlobal(cls, args));
        break;
      }
      case 0x62: {
        // BUILD
        const state = pop();
        const obj = top();
        if (obj instanceof PyDict) {
          obj.attrs = state; // OrderedDict attributes (torch: _metadata)
        } else {
          fail(`BUILD on a ${describe(obj)} is not supported`);
        }
        break;
      }
      case 0x50: // PERSID
        push(persistent(readLine()));
        break;
      case 0x51: // BINPERSID
        push(persistent(pop()));
        break;
      default:
        fail(OPNAMES[op] ? 'opcode not supported by rargen\'s restricted unpickler' : 'unknown pickle opcode');
    }
  }
}

// ---------------------------------------------------------------------------------
// Emitter (protocol 2), for writing torch checkpoints.

export class PickleWriter {
  private chunks: Buffer[] = [];
  private cur = Buffer.alloc(1 << 16);
  private len = 0;

  private ensure(k: number): void {
    if (this.len + k <= this.cur.length) return;
    this.chunks.push(this.cur.subarray(0, this.len));
    this.cur = Buffer.alloc(Math.max(1 << 16, k));
    this.len = 0;
  }
  op(...bytes: number[]): this {
    this.ensure(bytes.length);
    for (const b of bytes) this.cur[this.len++] = b;
    return this;
  }
  raw(b: Buffer): this {
    this.ensure(b.length);
    b.copy(this.cur, this.len);
    this.len += b.length;
    return this;
  }
  proto(v = 2): this {
    return this.op(0x80, v);
  }
  global(module: string, name: string): this {
    return this.op(0x63).raw(Buffer.from(`${module}\n${name}\n`, 'utf8'));
  }
  mark(): this {
    return this.op(0x28);
  }
  tuple(): this {
    return this.op(0x74);
  }
  emptyTuple(): this {
    return this.op(0x29);
  }
  reduce(): this {
    return this.op(0x52);
  }
  setitems(): this {
    return this.op(0x75);
  }
  binpersid(): this {
    return this.op(0x51);
  }
  bool(v: boolean): this {
    return this.op(v ? 0x88 : 0x89);
  }
  none(): this {
    return this.op(0x4e);
  }
  stop(): this {
    return this.op(0x2e);
  }
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    const h = Buffer.alloc(5);
    h[0] = 0x58;
    h.writeUInt32LE(b.length, 1);
    return this.raw(h).raw(b);
  }
  int(v: number): this {
    if (!Number.isSafeInteger(v)) throw new RangeError(`pickle int ${v} is not a safe integer`);
    if (v >= 0 && v < 256) return this.op(0x4b, v);
    if (v >= 0 && v < 65536) return this.op(0x4d, v & 0xff, v >> 8);
    if (v >= -0x80000000 && v <= 0x7fffffff) {
      const h = Buffer.alloc(5);
      h[0] = 0x4a;
      h.writeInt32LE(v, 1);
      return this.raw(h);
    }
    // LONG1: minimal little-endian two's complement
    let b = BigInt(v);
    const bytes: number[] = [];
    for (;;) {
      const byte = Number(b & 0xffn);
      bytes.push(byte);
      b >>= 8n;
      if ((b === 0n && !(byte & 0x80)) || (b === -1n && byte & 0x80)) break;
    }
    return this.op(0x8a, bytes.length, ...bytes);
  }
  /** A tuple of small ints (shape/stride). */
  intTuple(vs: readonly number[]): this {
    if (vs.length === 0) return this.emptyTuple();
    if (vs.length <= 3) {
      for (const v of vs) this.int(v);
      return this.op(0x84 + vs.length);
    }
    this.mark();
    for (const v of vs) this.int(v);
    return this.tuple();
  }
  bytes(): Buffer {
    return Buffer.concat([...this.chunks, this.cur.subarray(0, this.len)]);
  }
}
