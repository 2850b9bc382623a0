// Seeded mutations of a seed file for the reader fuzz (test/fuzz/readers-child.ts): the
// same (seed, case) always gives the same bytes, so a failing case is reproduced by its
// number alone. Mutations are the classic ones of byte-level fuzzers (bit flips,
// interesting integers over length/offset fields, truncation, deletion, duplication,
// splicing) plus digit runs for the text headers (npy dicts, safetensors JSON, pickles).

import { uniformStream as prng } from '../../lib/testing/weights.js';

/** mulberry32, the seeded PRNG of lib/testing/weights.ts. */
export { prng };

const INTERESTING32 = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const INTERESTING64 = [0n, 1n, 0xffffffffn, 0x100000000n, 0x7fffffffffffffffn, 0xffffffffffffffffn, 1n << 40n, 1n << 53n];
const DIGITS = ['0', '9', '99', '65535', '4294967296', '99999999999', '9007199254740993', '-1', '1e9', '4.0'];

export const MUTATIONS = ['flip', 'byte', 'u32', 'u64', 'truncate', 'delete', 'duplicate', 'insert', 'digits', 'splice'] as const;

/** The bytes of case `n` mutated from `src` (1 to 3 stacked mutations), and what was done. */
export function mutate(src: Uint8Array, seed: number, n: number): { bytes: Uint8Array; what: string } {
  const r = prng((seed * 0x9e3779b1) ^ (n * 0x85ebca6b));
  const int = (k: number) => Math.floor(r() * k);
  let b = Uint8Array.from(src);
  const steps: string[] = [];
  const count = 1 + int(3);
  for (let s = 0; s < count; s++) {
    const m = MUTATIONS[int(MUTATIONS.length)]!;
    const at = b.length ? int(b.length) : 0;
    switch (m) {
      case 'flip': {
        const k = 1 + int(8);
        for (let i = 0; i < k && b.length; i++) b[int(b.length)]! ^= 1 << int(8);
        steps.push(`flip x${k}`);
        break;
      }
      case 'byte':
        if (b.length) b[at] = [0, 0xff, 0x7f, 0x80, 0x2e, 0x28][int(6)]!;
        steps.push(`byte@${at}`);
        break;
      case 'u32': {
        if (b.length >= 4) {
          const p = int(b.length - 3);
          const v = r() < 0.25 ? src.length + int(64) - 32 : INTERESTING32[int(INTERESTING32.length)]!;
          new DataView(b.buffer).setUint32(p, v >>> 0, r() < 0.8);
          steps.push(`u32@${p}=${v >>> 0}`);
        }
        break;
      }
      case 'u64': {
        if (b.length >= 8) {
          const p = int(b.length - 7);
          const v = INTERESTING64[int(INTERESTING64.length)]!;
          new DataView(b.buffer).setBigUint64(p, v, r() < 0.8);
          steps.push(`u64@${p}=${v}`);
        }
        break;
      }
      case 'truncate':
        b = b.slice(0, at);
        steps.push(`truncate@${at}`);
        break;
      case 'delete': {
        const len = 1 + int(Math.min(64, Math.max(1, b.length - at)));
        b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(at + len)]);
        steps.push(`delete@${at}+${len}`);
        break;
      }
      case 'duplicate': {
        const len = 1 + int(Math.min(256, Math.max(1, b.length - at)));
        const piece = b.slice(at, at + len);
        const to = b.length ? int(b.length) : 0;
        b = Uint8Array.from([...b.subarray(0, to), ...piece, ...b.subarray(to)]);
        steps.push(`duplicate@${at}+${len}->${to}`);
        break;
      }
      case 'insert': {
        const len = 1 + int(16);
        const piece = Uint8Array.from({ length: len }, () => int(256));
        b = Uint8Array.from([...b.subarray(0, at), ...piece, ...b.subarray(at)]);
        steps.push(`insert@${at}+${len}`);
        break;
      }
      case 'digits': {
        // replace a run of ASCII digits (a size in a text header) by another number
        const starts: number[] = [];
        for (let i = 0; i < b.length; i++) if (b[i]! >= 0x30 && b[i]! <= 0x39 && (i === 0 || b[i - 1]! < 0x30 || b[i - 1]! > 0x39)) starts.push(i);
        if (starts.length) {
          const p = starts[int(starts.length)]!;
          let e = p;
          while (e < b.length && b[e]! >= 0x30 && b[e]! <= 0x39) e++;
          const d = new TextEncoder().encode(DIGITS[int(DIGITS.length)]!);
          b = Uint8Array.from([...b.subarray(0, p), ...d, ...b.subarray(e)]);
          steps.push(`digits@${p}=${new TextDecoder().decode(d)}`);
        }
        break;
      }
      case 'splice': {
        // copy a block over another place (moves headers/records onto data)
        const len = 1 + int(Math.min(128, Math.max(1, b.length - at)));
        const to = b.length ? int(b.length) : 0;
        b.set(b.slice(at, at + len).subarray(0, Math.max(0, b.length - to)), to);
        steps.push(`splice@${at}+${len}->${to}`);
        break;
      }
    }
  }
  return { bytes: b, what: steps.join(', ') };
}
