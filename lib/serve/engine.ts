// What the server runs on: the loaded models, the decode session over the generator
// and the renderer that turns finished token sequences into PNG files the same way the
// CLI does (the tokenizer's VQ decode through lib/generate.ts decode(), or the demo's
// palette lookup, then lib/image.ts's PNG encoder), so that a served image is
// byte-equal to the file `rargen generate` writes for the same class, seed and index.
import { basename } from 'node:path';
import { decode, type Generator, type Tokenizer, ValidationError } from '../generate.js';
import { encodePngAsync } from '../image.js';
import { decodeDemoTokens } from '../demo/index.js';
import type { Renderer } from './scheduler.js';
import type { Engine } from './server.js';
import { DecodeSession } from '../session.js';

/** Side of the demo's pictures as the CLI writes them (decodeDemoTokens' default). */
export const DEMO_PICTURE_SIZE = 128;

export function createEngine(o: { generator: Generator; tokenizer?: Tokenizer; demo?: boolean; maxRows: number; decodeBatch?: number }): Engine {
  const gen = o.generator;
  const demo = o.demo ?? false;
  const tok = o.tokenizer;
  if (demo && tok) throw new ValidationError('the demo model decodes by palette lookup: pass no tokenizer with demo: true');
  if (tok && tok.numTokens !== gen.config.seqLen) throw new ValidationError(`the tokenizer decodes ${tok.numTokens} tokens per image but the generator samples ${gen.config.seqLen}`);
  if (tok && tok.config.codebookSize !== gen.config.codebookSize)
    throw new ValidationError(`the tokenizer's codebook has ${tok.config.codebookSize} entries but the generator's has ${gen.config.codebookSize}`);
  const session = DecodeSession.create(gen, { maxRows: o.maxRows });
  const render: Renderer = tok
    ? async (tokens) => {
        const images = await decode(tok, tokens, { batchSize: o.decodeBatch ?? 16 });
        return Promise.all(images.map((img) => encodePngAsync(img)));
      }
    : demo
      ? async (tokens) => Promise.all(tokens.map((t) => encodePngAsync(decodeDemoTokens(t, DEMO_PICTURE_SIZE))))
      : async () => {
          throw new Error('no tokenizer: only response_format tokens can be answered');
        };
  return {
    generator: gen,
    tokenizer: tok,
    demo,
    modelId: demo ? 'demo' : basename(gen.path).replace(/\.(bin|pt|pth|safetensors)$/, ''),
    model: { numClasses: gen.config.numClasses, classNames: gen.classNames, seqLen: gen.config.seqLen, codebookSize: gen.config.codebookSize, sampling: gen.sampling, images: demo || tok !== undefined },
    session,
    render,
    resolution: tok ? tok.resolution : demo ? DEMO_PICTURE_SIZE : 0,
  };
}
