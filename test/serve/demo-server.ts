// A server over the real decode session and the shipped demo model (or any generator
// and tokenizer), and the reference answers: generate() with the same classes, seed and
// options, decoded and PNG-encoded the way `rargen generate` writes its files.
import { generate, loadGenerator, type GenerateOptions, type Generator, type Tokenizer } from '../../lib/generate.js';
import { encodePng } from '../../lib/image.js';
import { decodeDemoTokens } from '../../lib/demo/index.js';
import { createEngine, DEMO_PICTURE_SIZE } from '../../lib/serve/engine.js';
import { createImageServer, type ImageServer, type ServerLimits } from '../../lib/serve/server.js';

export interface RealServer {
  app: ImageServer;
  url: string;
  generator: Generator;
  close(): Promise<void>;
}

/** The demo model unless a generator is given; with `tokensOnly`, no renderer. */
export async function startRealServer(o: { generator?: Generator; tokenizer?: Tokenizer; tokensOnly?: boolean; maxRows?: number; limits?: ServerLimits } = {}): Promise<RealServer> {
  const own = !o.generator;
  const generator = o.generator ?? (await loadGenerator('demo', { device: 'cpu' }));
  const engine = createEngine({ generator, tokenizer: o.tokenizer, demo: !o.tokenizer && !o.tokensOnly, maxRows: o.maxRows ?? 32, decodeBatch: o.limits?.decodeBatch });
  const app = createImageServer(engine, o.limits);
  const url = await app.listen(0, '127.0.0.1');
  return {
    app,
    url,
    generator,
    close: async () => {
      await app.close(1000);
      if (own) generator.dispose();
    },
  };
}

type Sampling = Pick<GenerateOptions, 'guidanceScale' | 'guidanceScalePow' | 'temperature' | 'topK' | 'topP' | 'greedy' | 'seed' | 'indexOffset'>;

/** generate()'s images for these labels as PNG files (demo palette, or the tokenizer), and its tokens. */
export async function reference(generator: Generator, labels: number[], opts: Sampling, tokenizer?: Tokenizer): Promise<{ pngs: Buffer[]; tokens: Int32Array[] }> {
  const r = await generate({ generator, tokenizer, classLabels: labels, ...opts });
  const images = tokenizer ? r.images! : r.tokens.map((t) => decodeDemoTokens(t, DEMO_PICTURE_SIZE));
  return { pngs: images.map((img) => encodePng(img)), tokens: r.tokens };
}
