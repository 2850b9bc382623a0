// Backend::supports (src/backend.h) through the addon's backendSupports(device, op, dtype):
// the CPU backend's answers, the whole table, and the errors for an unknown op or dtype.
// The same bad call's message on every backend is src/test/optest.cc's "contract" group.
import { describe, expect, it } from 'vitest';
import { addon } from './helpers.js';

describe('backendSupports (Backend::supports)', () => {
  it('answers for the CPU backend: f32 everywhere, f16/bf16 weights, f32 KV cache only, no graphs', () => {
    const s = (op: string, dtype: 'f32' | 'f16' | 'bf16' | 'i32') => addon.backendSupports('cpu', op, dtype);
    expect(s('linear', 'f32')).toBe(true);
    expect(s('linear', 'f16')).toBe(true);
    expect(s('linear', 'bf16')).toBe(true);
    expect(s('linear', 'i32')).toBe(false);
    expect(s('conv2d', 'bf16')).toBe(true);
    expect(s('attention', 'f32')).toBe(true);
    expect(s('attention', 'f16')).toBe(false);
    expect(s('attention', 'bf16')).toBe(false);
    expect(s('layernorm', 'f16')).toBe(false);
    expect(s('attention_backward', 'f32')).toBe(true);
    expect(s('adamw', 'f32')).toBe(true);
    expect(s('graph_replay', 'f32')).toBe(false);
    expect(s('event_record', 'f32')).toBe(true);
  });

  it('the table of every op of src/backend.h and the dtypes the CPU runs it in', () => {
    const t = addon.backendSupports('cpu');
    const ops = Object.keys(t);
    expect(ops.length).toBe(50); // RARGEN_BACKEND_OPS: 8 memory, 21 forward (4 of them pooling), 4 graph, 5 event, 12 training
    expect(ops.slice(0, 3)).toEqual(['alloc', 'free', 'upload']);
    expect(t.alloc).toEqual(['f32', 'f16', 'bf16', 'i32']);
    expect(t.upload_weight).toEqual(['f32', 'f16', 'bf16']);
    expect(t.attention).toEqual(['f32']);
    expect(t.sample).toEqual(['f32']);
    for (const g of ['graph_capture_begin', 'graph_capture_end', 'graph_replay', 'graph_reset']) expect(t[g]).toEqual([]);
    const training = ['linear_backward', 'layernorm_modulate_backward', 'gated_residual_backward', 'gelu_backward', 'silu_backward', 'dropout', 'attention_train_forward', 'attention_backward', 'embedding_backward', 'cross_entropy', 'sum_squares', 'adamw'];
    for (const op of training) expect(t[op], op).toEqual(['f32']);
  });

  it('an unknown op, dtype or device is a clear error', () => {
    expect(() => addon.backendSupports('cpu', 'atention', 'f32')).toThrow(
      "rargen.backendSupports: Expected an op of src/backend.h (e.g. 'attention', 'linear_backward') for op but received 'atention'",
    );
    expect(() => addon.backendSupports('cpu', 'attention', 'f8' as 'f32')).toThrow(
      "rargen.backendSupports: Expected 'f32', 'f16', 'bf16' or 'i32' for dtype but received 'f8'",
    );
    expect(() => addon.backendSupports('tpu', 'attention', 'f32')).toThrow("unknown device 'tpu'");
    expect(() => addon.backendSupports(3 as unknown as string, 'attention', 'f32')).toThrow(
      'rargen.backendSupports: Expected a string for device but received',
    );
  });
});
