// The restricted unpickler on its own: opcodes of protocols 0-5, the memo, and the
// global allowlist.
import { describe, expect, it } from 'vitest';
import { PyDict, PyFloat, PyGlobal, PyTuple, unpickle, type GlobalSpec } from '../../lib/io/pickle.js';
import { RargenIOError } from '../../lib/io/errors.js';
import { cat, op } from '../helpers/pickle.js';

const NONE = new Map<string, GlobalSpec>();
const run = (bytes: Uint8Array | number[], globals = NONE) =>
  unpickle(Uint8Array.from(bytes), { file: 'x.pkl', what: 'test pickle', globals, allowedHint: '(only tensor and OrderedDict globals are)' }).value;
const ascii = (s: string): number[] => Array.from(Buffer.from(s, 'latin1'));

describe('unpickler', () => {
  it('reads ints of every width, floats, strings, bytes', () => {
    expect(run(cat(op.proto(2), op.int(255), op.stop))).toBe(255);
    expect(run(cat(op.proto(2), op.int(65535), op.stop))).toBe(65535);
    expect(run(cat(op.proto(2), op.int(-7), op.stop))).toBe(-7);
    expect(run(cat(op.proto(2), op.long1(-(2n ** 70n)), op.stop))).toBe(-(2n ** 70n));
    expect(run(cat(op.proto(2), op.long1(2n ** 40n), op.stop))).toBe(2 ** 40);
    expect(run(cat(op.proto(2), op.long1(0x1950a86a20f9469cfc6cn), op.stop))).toBe(0x1950a86a20f9469cfc6cn);
    const f = Buffer.alloc(9);
    f[0] = 0x47;
    f.writeDoubleBE(-1.25, 1);
    expect(run(cat(op.proto(2), f, op.stop))).toEqual(new PyFloat(-1.25)); // floats stay apart from ints
    expect(run(cat(op.proto(2), op.str('héllo'), op.stop))).toBe('héllo');
    expect(run(cat(op.proto(4), op.shortStr('ab'), op.stop))).toBe('ab');
    expect(run(cat(op.proto(3), [0x43, 3, 1, 2, 3], op.stop))).toEqual(Uint8Array.from([1, 2, 3]));
    // protocol 0 text opcodes
    expect(run(ascii('I42\n.'))).toBe(42);
    expect(run(ascii('I01\n.'))).toBe(true);
    expect(run(ascii('L123456789012345678901234567890L\n.'))).toBe(123456789012345678901234567890n);
    expect(run(ascii('F0.5\n.'))).toEqual(new PyFloat(0.5));
    expect(run(ascii("S'a\\nb'\np0\n0g0\n."))).toBe('a\nb');
    expect(run(ascii('Vcaf\\u00e9\n.'))).toBe('café');
  });

  it('builds lists, tuples, dicts, sets and uses the memo', () => {
    const v = run(
      cat(op.proto(2), op.emptyDict, op.binput(0), op.mark, op.str('a'), op.emptyList, op.mark, op.int(1), op.int(2), op.appends, op.str('t'), op.int(1), op.int(2), op.tuple2, op.binput(1), op.str('again'), op.binget(1), op.setitems, op.stop),
    ) as PyDict;
    expect(v).toBeInstanceOf(PyDict);
    expect(v.map.get('a')).toEqual([1, 2]);
    expect(v.map.get('t')).toBeInstanceOf(PyTuple);
    expect(v.map.get('again')).toBe(v.map.get('t'));
    const s = run(cat(op.proto(4), [0x8f], op.mark, op.int(1), op.int(2), [0x90], op.stop)) as Set<number>;
    expect([...s]).toEqual([1, 2]);
  });

  it('calls only allowlisted globals, through the handler', () => {
    const g = new Map<string, GlobalSpec>([['collections.OrderedDict', { call: () => new PyDict(true) }], ['torch.FloatStorage', {}]]);
    const v = run(cat(op.proto(2), op.global('collections', 'OrderedDict'), op.emptyTuple, op.reduce, op.stop), g);
    expect(v).toBeInstanceOf(PyDict);
    expect(run(cat(op.proto(2), op.global('torch', 'FloatStorage'), op.stop), g)).toEqual(new PyGlobal('torch', 'FloatStorage'));
    expect(() => run(cat(op.proto(2), op.global('torch', 'FloatStorage'), op.emptyTuple, op.reduce, op.stop), g)).toThrow(/pickle global 'torch.FloatStorage' may not be called/);
  });

  it.each([
    ['os', 'system'],
    ['posix', 'system'],
    ['builtins', 'eval'],
    ['builtins', 'exec'],
    ['__builtin__', 'eval'],
    ['subprocess', 'Popen'],
    ['torch.storage', '_load_from_bytes'],
    ['torch', 'load'],
    ['numpy.core.multiarray', '_reconstruct'],
  ])('refuses the global %s.%s (GLOBAL and STACK_GLOBAL)', (m, n) => {
    const re = new RegExp(`refusing to load x\\.pkl: pickle global '${m}\\.${n}'.*is not allowed \\(only tensor and OrderedDict globals are\\)`);
    expect(() => run(cat(op.proto(2), op.global(m, n), op.str('echo pwned'), op.tuple1, op.reduce, op.stop))).toThrow(re);
    expect(() => run(cat(op.proto(4), op.shortStr(m), op.shortStr(n), op.stackGlobal, op.stop))).toThrow(re);
  });

  it('refuses opcodes that build arbitrary objects or need outside state', () => {
    expect(() => run(cat(op.proto(2), ascii('ios\nsystem\n'), op.stop))).toThrow(/INST at offset 2: opcode not supported/);
    expect(() => run(cat(op.proto(2), [0x82, 1], op.stop))).toThrow(/EXT1/);
    expect(() => run(cat(op.proto(5), [0x97], op.stop))).toThrow(/NEXT_BUFFER/);
    expect(() => run(cat(op.proto(2), [0xff], op.stop))).toThrow(/0xff at offset 2: unknown pickle opcode/);
    expect(() => run(cat(op.proto(2), op.str('x'), op.binpersid, op.stop))).toThrow(/persistent ids are not allowed/);
    expect(() => run(cat(op.proto(2), op.int(1), op.int(2), op.build, op.stop))).toThrow(/BUILD on a number/);
  });

  it('rejects malformed pickles with the opcode and offset', () => {
    expect(() => run(cat(op.proto(2), op.binget(3), op.stop))).toThrow(/BINGET at offset 2: memo key 3 is not defined/);
    expect(() => run(cat(op.proto(2), op.append, op.stop))).toThrow(/APPEND at offset 2: pickle stack underflow/);
    expect(() => run(cat(op.proto(2), op.int(1), op.int(2), op.stop))).toThrow(/STOP with 2 items/);
    expect(() => run(cat(op.proto(2), op.strHeader(0x7fffffff), [65, 66]))).toThrow(/BINUNICODE at offset 2: pickle data ends early/);
    expect(() => run(cat(op.proto(2), [0x8b, 0xff, 0xff, 0xff, 0x7f]))).toThrow(/LONG4 .*integer of 2147483647 bytes is too large/);
    expect(() => run(cat(op.proto(9)))).toThrow(/unsupported pickle protocol 9/);
    expect(() => run(cat(op.proto(2), op.int(1)))).toThrow(RargenIOError);
  });

  it('deep nesting and long inputs run in bounded time and stack (no recursion)', () => {
    const depth = 200_000;
    const deep = new Uint8Array(2 + depth * 2 + 1);
    deep.set(op.proto(2));
    deep.fill(0x5d, 2, 2 + depth); // EMPTY_LIST x depth
    deep.fill(0x61, 2 + depth, 2 + 2 * depth - 1); // APPEND x depth-1: nests them
    deep[deep.length - 2] = 0x2e;
    const v = unpickle(deep.subarray(0, deep.length - 1), { file: 'x', what: 'deep', globals: NONE, allowedHint: '' }).value;
    expect(Array.isArray(v)).toBe(true);
    // a million MARKs, never closed
    const marks = new Uint8Array(1_000_002).fill(0x28);
    marks.set(op.proto(2));
    expect(() => run(marks)).toThrow(/ends early/);
    // memo limit
    expect(() =>
      unpickle(Uint8Array.from(cat(op.proto(2), op.int(1), op.longBinput(1), op.longBinput(2), op.longBinput(3), op.stop)), { file: 'x', what: 'memo', globals: NONE, allowedHint: '', maxMemo: 2 }),
    ).toThrow(/memo grows past 2 entries/);
  });
});
