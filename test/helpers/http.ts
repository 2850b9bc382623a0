// A loopback HTTP server for the download tests: serves files under the URL layout that
// RARGEN_DOWNLOAD_BASE maps to (http://127.0.0.1:PORT/HOST/PATH), honours Range
// requests, and can drop the connection part-way to simulate a broken download.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FileServer {
  base: string;
  /** Request log: path and headers of each request. */
  requests: { path: string; headers: IncomingHttpHeaders }[];
  /** Serve `data` at `path` (e.g. '/huggingface.co/yucornetto/RAR/resolve/main/rar_b.bin'). */
  set(path: string, data: Buffer): void;
  /** The next GET of `path` sends only `bytes` bytes, then destroys the socket. */
  dropNext(path: string, bytes: number): void;
  close(): Promise<void>;
}

export async function startFileServer(): Promise<FileServer> {
  const files = new Map<string, Buffer>();
  const drops = new Map<string, number>();
  const requests: FileServer['requests'] = [];
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    requests.push({ path, headers: req.headers });
    const data = files.get(path);
    if (!data) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      if (start >= data.length) {
        res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end();
        return;
      }
      res.writeHead(206, { 'content-length': data.length - start, 'content-range': `bytes ${start}-${data.length - 1}/${data.length}`, 'accept-ranges': 'bytes' });
    } else res.writeHead(200, { 'content-length': data.length, 'accept-ranges': 'bytes' });
    const drop = drops.get(path);
    if (drop !== undefined) {
      drops.delete(path);
      res.write(data.subarray(start, start + drop), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(data.subarray(start));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    base: `http://127.0.0.1:${port}`,
    requests,
    set: (p, d) => files.set(p, d),
    dropNext: (p, n) => drops.set(p, n),
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

/** A port on 127.0.0.1 with nothing listening (bound, then released). */
export async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
