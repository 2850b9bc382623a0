// Shared by the test/serve suites: a server over the fake session (no model), and small
// HTTP clients (JSON, raw, Server-Sent Events) on node:http.
import { request } from 'node:http';
import { createImage, encodePng } from '../../lib/image.js';
import { IMAGENET_CLASSES } from '../../lib/classes.js';
import type { Generator } from '../../lib/generate.js';
import { createImageServer, type Engine, type ImageServer, type ServerLimits } from '../../lib/serve/server.js';
import { FakeSession } from './fake-session.js';

export const FAKE_SEQ_LEN = 16;
export const FAKE_V = 64;

/** The fake renderer: a 4x4 picture of the tokens (grey levels), as a PNG. */
export function fakePng(tokens: Int32Array): Buffer {
  const img = createImage(4, 4);
  tokens.forEach((t, i) => img.data.fill(t * 4, i * 3, i * 3 + 3));
  return encodePng(img);
}

export interface FakeServer {
  app: ImageServer;
  session: FakeSession;
  url: string;
  renders: number[];
}

export async function startFakeServer(o: { maxRows?: number; stepMs?: number; limits?: ServerLimits } = {}): Promise<FakeServer> {
  const session = new FakeSession(o.maxRows ?? 8, FAKE_SEQ_LEN, FAKE_V, o.stepMs ?? 1);
  const renders: number[] = [];
  const engine: Engine = {
    generator: {} as Generator,
    demo: false,
    modelId: 'fake',
    model: { numClasses: 1000, classNames: IMAGENET_CLASSES, seqLen: FAKE_SEQ_LEN, codebookSize: FAKE_V, sampling: { guidanceScale: 2, guidanceScalePow: 1, temperature: 1 } },
    session,
    render: async (tokens) => {
      renders.push(tokens.length);
      await new Promise((r) => setTimeout(r, 1));
      return tokens.map(fakePng);
    },
    resolution: 4,
  };
  const app = createImageServer(engine, o.limits);
  const url = await app.listen(0, '127.0.0.1');
  return { app, session, url, renders };
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json(): any;
}

/** One request with node:http (no keep-alive). */
export function http(url: string, path: string, o: { method?: string; body?: string | Buffer; headers?: Record<string, string | number> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url + path, { method: o.method ?? (o.body !== undefined ? 'POST' : 'GET'), headers: { ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}), ...o.headers }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode!, headers: res.headers, body, json: () => JSON.parse(body.toString('utf8')) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

export const post = (url: string, body: unknown, headers: Record<string, string> = {}) => http(url, '/v1/images', { body: typeof body === 'string' ? body : JSON.stringify(body), headers });

/** Parses a text/event-stream body into events. */
export function parseSse(text: string): { event: string; data: any }[] {
  return text
    .split('\n\n')
    .filter((b) => b.trim() !== '')
    .map((b) => {
      let event = 'message';
      const data: string[] = [];
      for (const line of b.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).trim());
      }
      return { event, data: JSON.parse(data.join('\n')) };
    });
}

/** Starts a POST and destroys the connection after `afterMs` (a client that goes away). */
export function postAndDisconnect(url: string, body: unknown, afterMs: number): Promise<void> {
  return new Promise((resolve) => {
    const req = request(url + '/v1/images', { method: 'POST', headers: { 'content-type': 'application/json' }, agent: false });
    req.on('error', () => resolve());
    req.on('response', (res) => res.on('data', () => undefined));
    req.end(JSON.stringify(body));
    setTimeout(() => {
      req.destroy();
      resolve();
    }, afterMs);
  });
}

export async function until(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 5));
  }
}
