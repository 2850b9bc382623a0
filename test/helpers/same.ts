// Fast equality for big typed arrays (vitest's deep equality walks elements one by one).
import { expect } from 'vitest';

export function bytesOf(v: ArrayBufferView): Buffer {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

export function expectSameData(a: unknown, b: unknown, what = ''): void {
  if (Array.isArray(a) || Array.isArray(b)) {
    expect(a, what).toEqual(b);
    return;
  }
  const x = a as ArrayBufferView;
  const y = b as ArrayBufferView;
  expect(x.constructor, what).toBe(y.constructor);
  expect(bytesOf(x).equals(bytesOf(y)), what).toBe(true);
}

export function expectSameArrays(a: Map<string, { dtype: string; shape: number[]; data: unknown }>, b: Map<string, { dtype: string; shape: number[]; data: unknown }>): void {
  expect([...a.keys()]).toEqual([...b.keys()]);
  for (const [k, x] of a) {
    const y = b.get(k)!;
    expect(x.dtype, k).toBe(y.dtype);
    expect(x.shape, k).toEqual(y.shape);
    expectSameData(x.data, y.data, k);
  }
}
