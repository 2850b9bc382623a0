// GET /openapi.json: the OpenAPI 3.1 description of the server. The request body
// schema is derived from the zod schema the server validates with (schema.ts), with
// the loaded model's bounds (class ids, image limit) filled in.
import { z } from 'zod';
import { imageRequestSchema } from './schema.js';
import type { Engine, ServerLimits } from './server.js';
import { version } from '../cli.js';

const errorSchema = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: {
        code: { type: 'string', description: 'Stable code: invalid_json, invalid_body, invalid_field, missing_field, unknown_field, unknown_class, too_many_images, body_too_large, unsupported_media_type, queue_full, not_found, method_not_allowed, timeout, shutting_down, internal.' },
        message: { type: 'string', description: 'What was wrong and how to fix it.' },
        field: { type: 'string', description: 'The request field at fault ("classes[1]"), when there is one.' },
      },
    },
  },
};

const err = (description: string, headers?: Record<string, unknown>) => ({ description, ...(headers ? { headers } : {}), content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } });

export function openApiDocument(engine: Engine, limits: Required<ServerLimits>): Record<string, unknown> {
  const body = z.toJSONSchema(imageRequestSchema(engine.model, limits.maxImages), { target: 'draft-2020-12' }) as Record<string, unknown>;
  delete body.$schema;
  const image = {
    type: 'object',
    required: ['class', 'index'],
    properties: {
      class: { type: 'integer', description: 'Class id.' },
      index: { type: 'integer', description: 'Sequence index of the seed (indexOffset + k): the image equals generate({classLabels, seed})\'s image at this index.' },
      png: { type: 'string', contentEncoding: 'base64', description: `The PNG file (${engine.resolution}x${engine.resolution} RGB), base64 (b64_json).` },
      tokens: { type: 'array', items: { type: 'integer' }, description: `The ${engine.model.seqLen} token ids, raster order (response_format tokens).` },
    },
  };
  return {
    openapi: '3.1.0',
    info: {
      title: 'rargen serve',
      version: version(),
      description:
        'Class-conditional image generation with a RAR generator, continuously batched: requests join the running decode batch at any step, and image k of a request equals generate({classLabels, seed})\'s image k.',
    },
    paths: {
      '/v1/images': {
        post: {
          summary: 'Generate images',
          description:
            'Minimal form: {"classes": [207, "tabby"], "seed": 0}. With "stream": true (or Accept: text/event-stream) the answer is Server-Sent Events: start {images, tokensPerImage, classes}, progress {tokensDone, tokensTotal, imagesDone, imagesTotal, fraction} after each step, image {k, class, index, png|tokens} as each completes, then done {images, seconds} or error {error}.',
          requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/ImageRequest' } } } },
          responses: {
            '200': {
              description: 'The images in request order (b64_json, tokens), the PNG file (png), or an event stream (stream).',
              content: {
                'application/json': { schema: { type: 'object', required: ['images'], properties: { images: { type: 'array', items: { $ref: '#/components/schemas/Image' } } } } },
                'image/png': { schema: { type: 'string', contentMediaType: 'image/png' } },
                'text/event-stream': { schema: { type: 'string' } },
              },
            },
            '400': err('Bad input; error.field names the field.'),
            '413': err(`The body is larger than ${limits.maxBodyBytes} bytes.`),
            '415': err('The body is not JSON.'),
            '429': err(`More than ${limits.maxQueue} images are waiting.`, { 'Retry-After': { schema: { type: 'integer' }, description: 'Seconds to wait.' } }),
            '503': err('The server is shutting down.'),
            '504': err(`The request took longer than ${limits.timeoutMs / 1000} s.`),
          },
        },
      },
      '/v1/models': { get: { summary: 'The loaded model', responses: { '200': { description: '{"object": "list", "data": [{id, numClasses, tokensPerImage, codebookSize, resolution, sampling, maxImagesPerRequest, maxRows}]}', content: { 'application/json': {} } } } } },
      '/v1/classes': { get: { summary: "The model's classes", responses: { '200': { description: '{"classes": [{id, name, synonyms}]}', content: { 'application/json': {} } } } } },
      '/healthz': { get: { summary: 'Liveness', responses: { '200': { description: 'Serving.' }, '503': { description: 'Shutting down.' } } } },
      '/metrics': { get: { summary: 'Prometheus metrics', responses: { '200': { description: 'Text exposition format 0.0.4.', content: { 'text/plain': {} } } } } },
      '/openapi.json': { get: { summary: 'This document', responses: { '200': { description: 'OpenAPI 3.1.', content: { 'application/json': {} } } } } },
    },
    components: { schemas: { ImageRequest: body, Image: image, Error: errorSchema } },
  };
}
