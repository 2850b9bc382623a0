// The HTTP layer of `rargen serve` (node:http only). Routes:
//   POST /v1/images      generate images (JSON answer, a PNG file, or Server-Sent Events)
//   GET  /v1/models      the loaded model
//   GET  /v1/classes     its class names (the web page's picker)
//   GET  /healthz        200 while serving, 503 while shutting down
//   GET  /metrics        Prometheus text
//   GET  /openapi.json   the API description (lib/serve/openapi.ts)
//   GET  /               the web page (lib/serve/page/)
// Every refusal is JSON {"error": {code, message, field?}}: 400 bad input, 404, 405,
// 413 body too large, 415, 429 queue full (Retry-After), 503 shutting down, 504 request
// timeout. A client that disconnects has its images cancelled (their rows are freed at
// the next step).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Generator, Tokenizer } from '../generate.js';
import { className, classSynonyms } from '../classes.js';
import { packageRoot } from '../native.js';
import { ApiError, parseImageRequest, type ImageRequest, type ModelInfo } from './schema.js';
import { Scheduler, type JobImage, type Renderer, type SessionLike } from './scheduler.js';
import { Counter, Gauge, Histogram, LATENCY_BUCKETS, RateWindow, Registry } from './metrics.js';
import { openApiDocument } from './openapi.js';

/** The models and the decode session a server runs on (lib/serve/engine.ts createEngine). */
export interface Engine {
  generator: Generator;
  tokenizer?: Tokenizer;
  demo: boolean;
  /** The model's name in /v1/models. */
  modelId: string;
  model: ModelInfo;
  session: SessionLike;
  render: Renderer;
  /** Image side in pixels. */
  resolution: number;
}

export interface ServerLimits {
  /** Images waiting for a row before 429 (default 256). */
  maxQueue?: number;
  /** Images per request (default 64). */
  maxImages?: number;
  /** Request body bytes (default 64 KiB). */
  maxBodyBytes?: number;
  /** Per-request time limit in ms, queueing included (default 300 000). */
  timeoutMs?: number;
  /** Images per VQ decode call (default 16). */
  decodeBatch?: number;
  /** Keep stepping while images decode (default true). */
  overlapDecode?: boolean;
}

export interface ImageServer {
  server: Server;
  scheduler: Scheduler;
  metrics: Registry;
  limits: Required<ServerLimits>;
  /** Starts listening; resolves to the base URL (http://host:port). */
  listen(port: number, host: string): Promise<string>;
  /**
   * Graceful shutdown: new requests get 503, accepted ones may finish for `graceMs`
   * (the rest are cancelled with 503), then the connections close and the session is
   * freed. Idempotent.
   */
  close(graceMs?: number): Promise<void>;
}

const PAGE_DIR = () => join(packageRoot(), 'lib', 'serve', 'page');
const PAGE_FILES: Record<string, [file: string, type: string]> = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/style.css': ['style.css', 'text/css; charset=utf-8'],
};

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

function sendError(res: ServerResponse, e: ApiError): void {
  sendJson(res, e.status, e.toJSON(), e.headers);
}

/** Reads the body up to `limit` bytes (413 beyond). */
async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () => new ApiError(413, 'body_too_large', `the request body is larger than ${limit} bytes`, undefined, { connection: 'close' });
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > limit) throw tooLarge();
      chunks.push(c);
    }
  } catch (e) {
    if (e instanceof ApiError) throw e;
    throw new ApiError(400, 'incomplete_body', `the request body did not arrive: ${(e as Error).message}`);
  }
  return Buffer.concat(chunks);
}

function imageJson(img: JobImage, format: ImageRequest['responseFormat']): Record<string, unknown> {
  return format === 'tokens' ? { class: img.classId, index: img.index, tokens: Array.from(img.tokens) } : { class: img.classId, index: img.index, png: img.png!.toString('base64') };
}

export function createImageServer(engine: Engine, limits: ServerLimits = {}): ImageServer {
  const L: Required<ServerLimits> = {
    maxQueue: limits.maxQueue ?? 256,
    maxImages: limits.maxImages ?? 64,
    maxBodyBytes: limits.maxBodyBytes ?? 64 * 1024,
    timeoutMs: limits.timeoutMs ?? 300_000,
    decodeBatch: limits.decodeBatch ?? 16,
    overlapDecode: limits.overlapDecode ?? true,
  };
  if (L.maxImages > L.maxQueue) L.maxImages = L.maxQueue;
  const scheduler = new Scheduler({ session: engine.session, seqLen: engine.model.seqLen, render: engine.render, maxQueue: L.maxQueue, decodeBatch: L.decodeBatch, overlapDecode: L.overlapDecode });

  // --- metrics
  const reg = new Registry();
  const rate = new RateWindow(10_000);
  const requests = reg.add(new Counter('rargen_requests_total', 'HTTP requests answered, by route and status code.'));
  const latency = reg.add(new Histogram('rargen_request_duration_seconds', 'Time from arrival to the last byte of successful POST /v1/images answers.', LATENCY_BUCKETS));
  const images = reg.add(new Counter('rargen_images_total', 'Images completed.'));
  reg.add(new Gauge('rargen_images_per_second', 'Images completed per second over the last 10 s.', () => rate.rate()));
  reg.add(new Gauge('rargen_queue_images', 'Images waiting for a row of the decode batch.', () => scheduler.stats().queuedImages));
  reg.add(new Gauge('rargen_queue_requests', 'Requests with images waiting for a row.', () => scheduler.stats().queuedRequests));
  reg.add(new Gauge('rargen_active_images', 'Images being sampled in the decode batch.', () => scheduler.stats().activeImages));
  reg.add(new Gauge('rargen_batch_rows_used', 'Rows of the decode batch in use (an image with guidance takes two).', () => scheduler.stats().rowsUsed));
  reg.add(new Gauge('rargen_batch_rows', 'Rows of the decode batch.', () => scheduler.stats().maxRows));
  reg.add(new Gauge('rargen_batch_occupancy', 'Fraction of the decode batch rows in use now.', () => scheduler.stats().rowsUsed / Math.max(1, scheduler.stats().maxRows)));
  const occupancy = reg.add(new Histogram('rargen_step_batch_occupancy', 'Fraction of the rows in use at each decode step.', [0.0625, 0.125, 0.25, 0.5, 0.75, 1]));
  const stepSeconds = reg.add(new Histogram('rargen_step_seconds', 'Duration of each decode step.', [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]));
  reg.add(new Gauge('rargen_rendering_images', 'Sampled images waiting for or in the VQ decode.', () => scheduler.stats().rendering));
  reg.add(new Gauge('rargen_cancelled_images', 'Images cancelled so far (disconnects, timeouts, shutdown).', () => scheduler.stats().cancelledImages));
  reg.add(new Gauge('process_resident_memory_bytes', 'Resident set size of this process.', () => process.memoryUsage.rss()));
  scheduler.onStep = (rowsUsed, seconds) => {
    occupancy.observe(rowsUsed / scheduler.session.maxRows);
    stepSeconds.observe(seconds);
  };
  scheduler.onImage = () => {
    images.inc();
    rate.mark();
  };

  // --- static content
  const pages = new Map<string, [Buffer, string]>();
  for (const [route, [file, type]] of Object.entries(PAGE_FILES)) pages.set(route, [readFileSync(join(PAGE_DIR(), file)), type]);
  const openapi = JSON.stringify(openApiDocument(engine, L));
  const model = {
    id: engine.modelId,
    object: 'model',
    numClasses: engine.model.numClasses,
    hasClassNames: engine.model.classNames !== undefined,
    images: engine.model.images !== false,
    tokensPerImage: engine.model.seqLen,
    codebookSize: engine.model.codebookSize,
    resolution: engine.resolution,
    sampling: engine.model.sampling,
    maxImagesPerRequest: L.maxImages,
    maxRows: engine.session.maxRows,
  };
  const classes = {
    classes: Array.from({ length: engine.model.numClasses }, (_, id) =>
      engine.model.classNames ? { id, name: className(id, engine.model.classNames), synonyms: classSynonyms(engine.model.classNames[id]!) } : { id, name: String(id), synonyms: [] },
    ),
  };
  const classesText = JSON.stringify(classes);

  let closing: Promise<void> | undefined;

  async function postImages(req: IncomingMessage, res: ServerResponse, t0: number): Promise<number> {
    const type = String(req.headers['content-type'] ?? '');
    if (type !== '' && !/^application\/json\b/i.test(type) && !/^application\/x-www-form-urlencoded\b/i.test(type) && !/^text\/plain\b/i.test(type))
      throw new ApiError(415, 'unsupported_media_type', `Expected a JSON body (Content-Type: application/json) but received Content-Type ${JSON.stringify(type)}`);
    const raw = await readBody(req, L.maxBodyBytes);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (e) {
      throw new ApiError(400, 'invalid_json', `the request body is not valid JSON: ${(e as Error).message}`);
    }
    const accept = String(req.headers.accept ?? '');
    const ir = parseImageRequest(body, engine.model, L.maxImages, /\btext\/event-stream\b/i.test(accept));
    const stream = ir.stream;
    let sse = false;
    const send = (event: string, data: unknown) => {
      if (!res.writableEnded && !res.destroyed) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    const ticket = scheduler.submit(
      ir,
      stream
        ? {
            progress: (p) => send('progress', { ...p, fraction: p.tokensDone / p.tokensTotal }),
            image: (img) => send('image', { k: img.k, ...imageJson(img, ir.responseFormat) }),
          }
        : {},
      rate.rate(),
    );
    const onClose = () => {
      if (!res.writableFinished) ticket.cancel(new ApiError(499, 'client_disconnected', 'the client disconnected'));
    };
    res.on('close', onClose);
    const timer = setTimeout(
      () => ticket.cancel(new ApiError(504, 'timeout', `the request did not finish within ${L.timeoutMs / 1000} s (the server's --timeout); ask for fewer images or retry when it is less busy`)),
      L.timeoutMs,
    );
    if (stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
      sse = true;
      send('start', { images: ir.labels.length, tokensPerImage: engine.model.seqLen, classes: ir.labels });
    }
    try {
      const done = await ticket.done;
      const seconds = (performance.now() - t0) / 1000;
      if (sse) {
        send('done', { images: done.length, seconds });
        res.end();
      } else if (ir.responseFormat === 'png') {
        const png = done[0]!.png!;
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': png.length, 'x-rargen-class': String(done[0]!.classId), 'x-rargen-index': String(done[0]!.index) });
        res.end(png);
      } else sendJson(res, 200, { images: done.map((img) => imageJson(img, ir.responseFormat)) });
      latency.observe(seconds);
      return 200;
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(500, 'internal', (e as Error).message);
      if (sse) {
        send('error', err.toJSON());
        res.end();
        return err.status;
      }
      if (err.code === 'client_disconnected') return 499;
      throw err;
    } finally {
      clearTimeout(timer);
      res.off('close', onClose);
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    let route = 'other';
    let status = 500;
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const path = url.pathname;
      const method = req.method ?? 'GET';
      const get = method === 'GET' || method === 'HEAD';
      const allow = (m: string) => new ApiError(405, 'method_not_allowed', `${method} ${path} is not supported: use ${m}`, undefined, { allow: m });
      if (path === '/v1/images') {
        route = 'images';
        if (method !== 'POST') throw allow('POST');
        status = await postImages(req, res, t0);
        return;
      }
      const page = pages.get(path);
      if (page) route = 'page';
      else if (['/healthz', '/metrics', '/openapi.json', '/v1/models', '/v1/classes'].includes(path)) route = path.replace(/^\/(v1\/)?/, '').replace('.json', '');
      else throw new ApiError(404, 'not_found', `no such path ${JSON.stringify(path)} (see /openapi.json)`);
      if (!get) throw allow('GET');
      status = 200;
      if (page) {
        res.writeHead(200, { 'content-type': page[1], 'content-length': page[0].length, 'cache-control': 'no-cache' });
        res.end(page[0]);
      } else if (path === '/healthz') {
        status = closing ? 503 : 200;
        sendJson(res, status, { status: closing ? 'shutting_down' : 'ok', ...scheduler.stats() });
      } else if (path === '/metrics') {
        const text = reg.render();
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      } else if (path === '/openapi.json') {
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(openapi) });
        res.end(openapi);
      } else if (path === '/v1/models') sendJson(res, 200, { object: 'list', data: [model] });
      else {
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(classesText) });
        res.end(classesText);
      }
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(500, 'internal', `internal error: ${(e as Error).message}`);
      if (err.status === 500) process.stderr.write(`rargen serve: ${(e as Error).stack ?? err.message}\n`);
      status = err.status;
      if (!res.destroyed) sendError(res, err);
    } finally {
      requests.inc({ route, code: String(status) });
    }
  }

  const server = createServer({ requestTimeout: 60_000, headersTimeout: 30_000, keepAliveTimeout: 5_000 }, (req, res) => {
    void handle(req, res);
  });
  server.on('clientError', (_e, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
  });

  return {
    server,
    scheduler,
    metrics: reg,
    limits: L,
    listen: (port, host) =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          const a = server.address() as AddressInfo;
          resolve(`http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`);
        });
      }),
    close: (graceMs = 30_000) =>
      (closing ??= (async () => {
        const stopped = new Promise<void>((r) => server.close(() => r()));
        server.closeIdleConnections();
        await scheduler.close(graceMs);
        // the last answers are written; give them a moment to flush, then drop what is left
        await new Promise((r) => setTimeout(r, 50));
        server.closeAllConnections();
        await stopped;
        engine.session.dispose();
      })()),
  };
}
