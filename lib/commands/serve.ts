// rargen serve: an HTTP server (and web page) that generates images with continuous
// batching (lib/serve/). Loads the models once, prints `listening on URL` on stdout,
// serves until SIGTERM or SIGINT, then shuts down gracefully (accepted requests may
// finish for --shutdown-grace seconds, the rest are cancelled) and exits 0.
import { existsSync } from 'node:fs';
import { loadGenerator, loadTokenizer, type Generator, type Tokenizer } from '../generate.js';
import { PRESET_NAMES } from '../config.js';
import { resolveModelPath, findReleasedFile } from '../releases.js';
import { demoPaths, loadDemoInfo } from '../demo/index.js';
import { deviceOption, intOption, MODEL_OPTIONS, modelOptions, note, numberOption, parseCommandArgs, UsageError } from './_shared.js';
import { createEngine } from '../serve/engine.js';
import { createImageServer } from '../serve/server.js';

export const summary = 'serve image generation over HTTP (JSON API, Server-Sent Events, a web page) with continuous batching';

const USAGE = `Usage: rargen serve --generator FILE|NAME [--tokenizer FILE|NAME] [options]
       rargen serve --demo [options]

Serves POST /v1/images ({"classes": [207, "tabby"], "seed": 0}), GET /v1/models,
/v1/classes, /healthz, /metrics, /openapi.json and a web page at /. Requests join
the running decode batch at every step; image k of a request equals
\`rargen generate\`'s image k for the same classes, seed and options.

Options:
  --generator FILE|NAME   RAR checkpoint, or a downloaded name (rar-b, rar-l, rar-xl, rar-xxl)
  --tokenizer FILE|NAME   MaskGIT-VQGAN checkpoint (default maskgit-vqgan with a downloaded
                          generator; without one, only response_format tokens is answered)
  --demo                  the small demo model shipped with rargen (offline; palette pictures)
  --preset NAME           ${PRESET_NAMES.join(', ')}; must match the weights (default: inferred)
  --device D              auto, cpu, cuda or cuda:N (default auto)
  --precision P           f32, f16 or bf16 weights on the backend (default f32)
  --host H                address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)
  --port N                port (default 8080; 0 picks a free one)
  --max-batch N           images sampled together (default 16): the decode batch has 2N rows,
                          an image with guidance takes two, one without
  --max-queue N           images waiting for a row before requests get 429 (default 256)
  --max-images N          images per request (default 64)
  --max-body BYTES        request body limit (default 65536)
  --timeout S             per-request time limit in seconds, queueing included (default 300)
  --decode-batch N        images per VQ decode call (default 16)
  --sync-decode           wait for each VQ decode before the next step (default: overlap them)
  --shutdown-grace S      on SIGTERM, seconds accepted requests may still finish (default 30)
  -h, --help              show this help`;

function modelFile(arg: string, flag: string): string {
  const p = resolveModelPath(arg);
  if (!existsSync(p)) throw new UsageError(`${flag} ${arg}: no such file (a path, or a name from \`rargen download --help\`)`);
  return p;
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(
    argv,
    {
      ...MODEL_OPTIONS,
      demo: { type: 'boolean' },
      host: { type: 'string' },
      port: { type: 'string' },
      'max-batch': { type: 'string' },
      'max-queue': { type: 'string' },
      'max-images': { type: 'string' },
      'max-body': { type: 'string' },
      timeout: { type: 'string' },
      'decode-batch': { type: 'string' },
      'sync-decode': { type: 'boolean' },
      'shutdown-grace': { type: 'string' },
    },
    false,
  );
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const demo = values.demo === true || values.generator === 'demo';
  if (values.demo && values.generator !== undefined) throw new UsageError('--demo and --generator cannot be used together');
  if (demo && values.tokenizer !== undefined) throw new UsageError('--demo decodes by palette lookup: drop --tokenizer');
  if (!demo && values.generator === undefined) throw new UsageError('--generator is required (or --demo for the shipped demo model)');
  const { preset, precision } = modelOptions(values);
  const device = deviceOption(values.device);
  const host = values.host ?? '127.0.0.1';
  if (host === '') throw new UsageError('--host is empty');
  const port = intOption(values.port, '--port', 0) ?? 8080;
  if (port > 65535) throw new UsageError(`--port expects an integer between 0 and 65535 but received ${values.port}`);
  const maxBatch = intOption(values['max-batch'], '--max-batch', 1) ?? 16;
  const maxQueue = intOption(values['max-queue'], '--max-queue', 1) ?? 256;
  const maxImages = intOption(values['max-images'], '--max-images', 1) ?? 64;
  if (maxImages > maxQueue) throw new UsageError(`--max-images ${maxImages} exceeds --max-queue ${maxQueue}: such a request could never be queued`);
  const maxBodyBytes = intOption(values['max-body'], '--max-body', 256) ?? 64 * 1024;
  const decodeBatch = intOption(values['decode-batch'], '--decode-batch', 1) ?? 16;
  const seconds = (flag: string, v: string | undefined, dflt: number) => {
    const s = numberOption(v, flag);
    if (s !== undefined && !(s > 0)) throw new UsageError(`${flag} expects a number of seconds > 0 but received ${v}`);
    return (s ?? dflt) * 1000;
  };
  const timeoutMs = seconds('--timeout', values.timeout, 300);
  const graceMs = seconds('--shutdown-grace', values['shutdown-grace'], 30);

  let tokenizerArg = values.tokenizer;
  if (!demo && tokenizerArg === undefined) {
    if (findReleasedFile(values.generator!)?.kind === 'generator') tokenizerArg = 'maskgit-vqgan';
  }
  const generatorPath = demo ? demoPaths().weights : modelFile(values.generator!, '--generator');
  const tokenizerPath = demo || tokenizerArg === undefined ? undefined : modelFile(tokenizerArg, '--tokenizer');
  if (!demo && !tokenizerPath) note('rargen serve: no --tokenizer: answering response_format tokens only');
  if (demo) loadDemoInfo(); // says how to create it when missing

  let generator: Generator | undefined;
  let tokenizer: Tokenizer | undefined;
  try {
    generator = await loadGenerator(generatorPath, { preset, device, precision });
    if (tokenizerPath) tokenizer = await loadTokenizer(tokenizerPath, { device });
    note(`rargen serve: ${generator.device.reason}`);
    const engine = createEngine({ generator, tokenizer, demo, maxRows: 2 * maxBatch, decodeBatch });
    const app = createImageServer(engine, { maxQueue, maxImages, maxBodyBytes, timeoutMs, decodeBatch, overlapDecode: !values['sync-decode'] });
    let url: string;
    try {
      url = await app.listen(port, host);
    } catch (e) {
      engine.session.dispose();
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EADDRINUSE') throw new UsageError(`--port ${port}: the address ${host}:${port} is in use (pass another --port, or 0 for a free one)`);
      if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND') throw new UsageError(`--host ${host}: cannot bind this address (${err.code})`);
      throw e;
    }
    const c = generator.config;
    note(`rargen serve: model ${engine.modelId} (hidden ${c.hiddenSize}, depth ${c.depth}, ${c.seqLen} tokens, ${c.numClasses} classes); decode batch ${engine.session.maxRows} rows`);
    process.stdout.write(`listening on ${url}\n`);
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        process.off('SIGTERM', onTerm);
        process.off('SIGINT', onInt);
        note(`rargen serve: ${sig}: finishing ${app.scheduler.pendingRequests} request(s) (at most ${graceMs / 1000} s), then exiting`);
        void app.close(graceMs).then(resolve, resolve);
      };
      const onTerm = () => stop('SIGTERM');
      const onInt = () => stop('SIGINT');
      process.on('SIGTERM', onTerm);
      process.on('SIGINT', onInt);
    });
    note('rargen serve: stopped');
    return 0;
  } finally {
    generator?.dispose();
    tokenizer?.dispose();
  }
}
