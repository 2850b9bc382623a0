// The request body of POST /v1/images, written once as a zod schema: the server
// validates with it and lib/serve/openapi.ts derives the OpenAPI request schema from it
// (z.toJSONSchema), so the served documentation cannot drift from what is accepted.
// Field names are generate()'s options (guidanceScale, temperature, topK, ...), plus
// `classes` (ids or names), `n` (images per class), `response_format` and `stream`.
// Every refusal is an ApiError whose JSON body is {"error": {code, message, field}}
// with the field's path ("classes[1]") and what was expected.
import { z } from 'zod';
import { describeValue } from '../generate.js';
import { resolveClassName } from '../classes.js';
import { ClassNameError } from '../errors.js';
import { resolveSampling, type SamplingDefaults } from '../config.js';
import type { NativeSampling } from '../native.js';

/** An HTTP error answer: status, a stable code, a message and the offending field. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
  /** The JSON body: {"error": {"code", "message", "field"?}}. */
  toJSON(): { error: { code: string; message: string; field?: string } } {
    return { error: { code: this.code, message: this.message, ...(this.field !== undefined ? { field: this.field } : {}) } };
  }
}

/** What the schema needs to know about the loaded model. */
export interface ModelInfo {
  numClasses: number;
  /** One entry per class id (comma-separated synonyms), when the model has names. */
  classNames?: readonly string[];
  /** Tokens per image. */
  seqLen: number;
  /** Token vocabulary (the bound of topK). */
  codebookSize: number;
  /** Defaults for guidanceScale, guidanceScalePow, temperature. */
  sampling: SamplingDefaults;
  /** False when the server has no tokenizer: only response_format tokens is answered. */
  images?: boolean;
}

/** The response formats: base64 PNG in JSON (default), the raw PNG of a one-image request, or the token ids. */
export const RESPONSE_FORMATS = ['b64_json', 'png', 'tokens'] as const;
export type ResponseFormat = (typeof RESPONSE_FORMATS)[number];

const SEED_MAX = 2n ** 64n - 1n;

/** The zod schema of the POST /v1/images body for a model and a per-request image limit. */
export function imageRequestSchema(model: ModelInfo, maxImages: number) {
  const K = model.numClasses;
  const classExpect = `a class id (integer 0..${K - 1})${model.classNames ? ' or a class name' : ''}`;
  const classItem = z.union(
    [
      z.number().int().min(0).max(K - 1),
      z.string().min(1).max(200),
    ],
    { error: classExpect },
  );
  const num = (expect: string) => z.number({ error: expect });
  const nonNeg = num('a finite number >= 0').min(0, { error: 'a finite number >= 0' });
  return z.strictObject(
    {
      classes: z
        .array(classItem, { error: `a non-empty array of class ids or names (at most ${maxImages})` })
        .min(1, { error: 'a non-empty array of class ids or names' })
        .max(maxImages, { error: `at most ${maxImages} classes` })
        .optional()
        .describe(`The class of each image: ids (0..${K - 1}) or names${model.classNames ? ` ("${model.classNames[0]!.split(',')[0]}")` : ''}. Image k of the answer has classes[floor(k / n)].`),
      class: classItem.optional().describe('One class (instead of classes).'),
      n: z
        .number({ error: `an integer between 1 and ${maxImages}` })
        .int({ error: `an integer between 1 and ${maxImages}` })
        .min(1, { error: `an integer between 1 and ${maxImages}` })
        .max(maxImages, { error: `an integer between 1 and ${maxImages}` })
        .optional()
        .describe('Images per class (default 1). classes [a, b] with n 2 are the images a, a, b, b.'),
      seed: z
        .union([z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), z.string().regex(/^\d{1,20}$/)], { error: 'an integer >= 0, or a decimal string below 2^64' })
        .optional()
        .describe('64-bit seed (default 0); a string for values above 2^53. Image k depends on (seed, indexOffset + k) only.'),
      indexOffset: z
        .number({ error: 'an integer >= 0' })
        .int({ error: 'an integer >= 0' })
        .min(0, { error: 'an integer >= 0' })
        .max(Number.MAX_SAFE_INTEGER, { error: 'an integer >= 0' })
        .optional()
        .describe("Global index of image 0 (default 0), as generate()'s indexOffset."),
      guidanceScale: nonNeg.optional().describe(`Classifier-free guidance scale (0 = none; default ${model.sampling.guidanceScale}).`),
      guidanceScalePow: nonNeg.optional().describe(`Power of the guidance schedule (default ${model.sampling.guidanceScalePow}).`),
      temperature: num('a finite number > 0').gt(0, { error: 'a finite number > 0' }).optional().describe(`Softmax temperature (default ${model.sampling.temperature}).`),
      topK: z
        .number({ error: `an integer between 0 and ${model.codebookSize}` })
        .int({ error: `an integer between 0 and ${model.codebookSize}` })
        .min(0, { error: `an integer between 0 and ${model.codebookSize}` })
        .max(model.codebookSize, { error: `an integer between 0 and ${model.codebookSize}` })
        .optional()
        .describe('Keep the k most likely tokens (0 = off, the default).'),
      topP: num('a number greater than 0 and at most 1').gt(0, { error: 'a number greater than 0 and at most 1' }).max(1, { error: 'a number greater than 0 and at most 1' }).optional().describe('Nucleus sampling (1 = off, the default).'),
      greedy: z.boolean({ error: 'a boolean' }).optional().describe('Argmax instead of sampling.'),
      response_format: z.enum(RESPONSE_FORMATS, { error: `one of ${RESPONSE_FORMATS.join(', ')}` }).optional().describe('b64_json (default; tokens on a server without a tokenizer): {"images": [{"class", "index", "png": base64}]}; png: the PNG file itself (one-image requests); tokens: the token ids instead of pictures.'),
      stream: z.boolean({ error: 'a boolean' }).optional().describe('Answer with Server-Sent Events (also chosen by Accept: text/event-stream): progress, each image as it completes, done.'),
    },
    { error: 'a JSON object' },
  );
}

/** A validated request: one class id per image, and every sampling option resolved. */
export interface ImageRequest extends NativeSampling {
  /** Class id of each image, in answer order. */
  labels: number[];
  seed: bigint;
  indexOffset: number;
  responseFormat: ResponseFormat;
  stream: boolean;
}

function formatPath(path: readonly PropertyKey[]): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s ? `.${String(p)}` : String(p);
  return s;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

/** The first zod issue as a 400 naming the field. */
function issueError(issues: readonly z.core.$ZodIssue[], body: unknown, fields: readonly string[]): ApiError {
  const iss = issues[0]!;
  if (iss.code === 'unrecognized_keys') {
    const key = iss.keys[0]!;
    return new ApiError(400, 'unknown_field', `Unknown field ${JSON.stringify(key)} (fields: ${fields.join(', ')})`, key);
  }
  const field = formatPath(iss.path);
  if (field === '') return new ApiError(400, 'invalid_body', `Expected ${iss.message} as the request body but received ${describeValue(body)}`);
  const v = valueAt(body, iss.path);
  return new ApiError(400, v === undefined ? 'missing_field' : 'invalid_field', `Expected ${iss.message} for ${field} but received ${describeValue(v)}`, field);
}

/** Validates a parsed JSON body; throws ApiError (400) naming the field. */
export function parseImageRequest(body: unknown, model: ModelInfo, maxImages: number, acceptsEventStream = false): ImageRequest {
  const schema = imageRequestSchema(model, maxImages);
  const r = schema.safeParse(body);
  if (!r.success) throw issueError(r.error.issues, body, Object.keys(schema.shape));
  const o = r.data;
  if (o.classes !== undefined && o.class !== undefined) throw new ApiError(400, 'invalid_field', 'Pass either classes or class, not both', 'class');
  if (o.classes === undefined && o.class === undefined) throw new ApiError(400, 'missing_field', 'Expected classes: a non-empty array of class ids or names, e.g. {"classes": [207], "seed": 0}', 'classes');
  const given = o.classes ?? [o.class!];
  const field = (i: number) => (o.classes !== undefined ? `classes[${i}]` : 'class');
  const ids = given.map((c, i) => {
    if (typeof c === 'number') return c;
    if (!model.classNames) throw new ApiError(400, 'invalid_field', `Expected a class id (integer 0..${model.numClasses - 1}) for ${field(i)} but received ${describeValue(c)}: this model has no class names`, field(i));
    try {
      return resolveClassName(c, model.classNames);
    } catch (e) {
      if (e instanceof ClassNameError) throw new ApiError(400, 'unknown_class', `${field(i)}: ${e.message}`, field(i));
      throw e;
    }
  });
  const n = o.n ?? 1;
  if (ids.length * n > maxImages) throw new ApiError(400, 'too_many_images', `${ids.length} classes x n ${n} = ${ids.length * n} images; at most ${maxImages} per request`, 'n');
  const seed = BigInt(o.seed ?? 0);
  if (seed > SEED_MAX) throw new ApiError(400, 'invalid_field', `Expected an integer >= 0, or a decimal string below 2^64 for seed but received ${describeValue(o.seed)}`, 'seed');
  const labels = ids.flatMap((id) => Array.from({ length: n }, () => id));
  const responseFormat = o.response_format ?? (model.images === false ? 'tokens' : 'b64_json');
  if (model.images === false && responseFormat !== 'tokens')
    throw new ApiError(400, 'invalid_field', `this server has no tokenizer to decode images (start it with --tokenizer): ask for response_format tokens`, 'response_format');
  const stream = o.stream ?? acceptsEventStream;
  if (responseFormat === 'png' && labels.length !== 1)
    throw new ApiError(400, 'invalid_field', `response_format png answers one PNG file but this request asks for ${labels.length} images: ask for one, or use b64_json`, 'response_format');
  if (responseFormat === 'png' && stream) throw new ApiError(400, 'invalid_field', 'response_format png answers a PNG file, not an event stream: use b64_json with stream', 'response_format');
  if ((o.indexOffset ?? 0) + labels.length > Number.MAX_SAFE_INTEGER) throw new ApiError(400, 'invalid_field', 'indexOffset + the image count exceeds 2^53 - 1', 'indexOffset');
  return {
    labels,
    seed,
    indexOffset: o.indexOffset ?? 0,
    ...resolveSampling(o, model.sampling),
    responseFormat,
    stream,
  };
}
