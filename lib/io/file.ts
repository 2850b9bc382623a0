// Positional file access (fs FileHandle.read/write at an offset). Checkpoints are up to
// ~6 GB and npz archives of samples ~10 GB: nothing here ever reads a whole file;
// callers read exactly the (offset, length) ranges an index tells them about.
import { open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ioFail, RargenIOError } from './errors.js';
import { pidAlive } from './lock.js';

/** Largest single read/write request (Linux caps one syscall at 0x7ffff000 bytes). */
const MAX_IO = 1 << 30;
// One request per read: splitting large reads into concurrent requests was measured
// slower (page faults on fresh destination memory serialise in the kernel).

export class RandomAccessFile {
  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly size: number,
  ) {}

  static async open(path: string): Promise<RandomAccessFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw new RargenIOError(path, `${path}: cannot open: ${(e as Error).message}`, { cause: e });
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) ioFail(path, 'not a regular file');
      return new RandomAccessFile(path, fh, st.size);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** Read exactly `length` bytes at `offset` into a new Buffer (error if the file is shorter). */
  async read(offset: number, length: number, what: string): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(buf, offset, what);
    return buf;
  }

  /** Fill `dst` entirely with the bytes at `offset` (error if the file is shorter). */
  async readInto(dst: Uint8Array, offset: number, what: string): Promise<void> {
    const length = dst.byteLength;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > this.size) {
      ioFail(this.path, `${what}: bytes ${offset}..${offset + length} lie outside the file (size ${this.size}); the file is truncated or corrupt`);
    }
    await this.readSpan(dst, 0, length, offset, what);
  }

  private async readSpan(dst: Uint8Array, start: number, length: number, offset: number, what: string): Promise<void> {
    let done = 0;
    while (done < length) {
      const n = Math.min(MAX_IO, length - done);
      const { bytesRead } = await this.fh.read(dst, start + done, n, offset + start + done);
      if (bytesRead === 0) ioFail(this.path, `${what}: unexpected end of file at offset ${offset + start + done}`);
      done += bytesRead;
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Write all of `data` at `position`. */
export async function writeFully(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.byteLength) {
    const n = Math.min(MAX_IO, data.byteLength - done);
    const { bytesWritten } = await fh.write(data, done, n, position + done);
    done += bytesWritten;
  }
}

/** Bytes of any typed array / Buffer / DataView, without copying. */
export function bytesOf(v: ArrayBufferView): Uint8Array {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/** Temp files of AtomicFiles open in this process (absolute paths). */
const liveTemps = new Set<string>();

/**
 * Whether `path` is the temp file of an AtomicFile this process has open. A temp file
 * named with our pid but not listed is a previous process's (a restarted container runs
 * as the same PID 1) and may be removed.
 */
export function isLiveTempFile(path: string): boolean {
  return liveTemps.has(resolve(path));
}

/**
 * A file written under a temporary name next to its final path (`.<name>.tmp-<pid>-<rand>`)
 * and renamed into place by commit() after an fsync, so a killed run never leaves a
 * half-written file at the final path.
 */
export class AtomicFile {
  private constructor(
    readonly path: string,
    readonly tempPath: string,
    readonly fh: FileHandle,
  ) {}

  static async create(path: string): Promise<AtomicFile> {
    const rand = Math.random().toString(36).slice(2, 10);
    const tempPath = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${rand}`);
    liveTemps.add(resolve(tempPath));
    let fh: FileHandle;
    try {
      fh = await open(tempPath, 'wx');
    } catch (e) {
      liveTemps.delete(resolve(tempPath));
      throw e;
    }
    return new AtomicFile(path, tempPath, fh);
  }

  /**
   * fsyncs the data, renames the temp file to the final path and, with `sync`, fsyncs
   * the folder so that the rename survives a crash (callers writing many files into one
   * folder sync it once, with syncDir, after the last).
   */
  async commit(sync = false): Promise<void> {
    await this.fh.datasync();
    await this.fh.close();
    await rename(this.tempPath, this.path);
    liveTemps.delete(resolve(this.tempPath));
    if (sync) await syncDir(dirname(this.path));
  }

  async abort(): Promise<void> {
    try {
      await this.fh.close();
    } catch {
      /* already closed */
    }
    try {
      await unlink(this.tempPath);
    } catch {
      /* already gone */
    }
    liveTemps.delete(resolve(this.tempPath));
  }
}

/**
 * Writes `data` to `path` atomically: a temp file beside it, fsynced and renamed (see
 * AtomicFile), then, unless `sync` is false, the folder fsynced. The one atomic write of
 * rargen (run files, manifests, PNGs, caches, training state).
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string, sync = true): Promise<void> {
  const f = await AtomicFile.create(path);
  try {
    await writeFully(f.fh, typeof data === 'string' ? Buffer.from(data, 'utf8') : data, 0);
    await f.commit(sync);
  } catch (e) {
    await f.abort();
    throw e;
  }
}

/** fsyncs a folder so that renames in it survive a crash (best effort: some filesystems cannot fsync a folder). */
export async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    /* some filesystems cannot fsync a folder; the rename is still atomic */
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/**
 * Deletes the AtomicFile temp files (`.<name>.tmp-<pid>-*`, `name` starting with
 * `prefix`) in `dir` of processes no longer alive. A temp file with our own pid is stale
 * unless this process has it open (a restarted container runs as the same PID 1).
 */
export async function removeStaleTemps(dir: string, prefix = ''): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const n of names) {
    const m = /^\.(.+)\.tmp-(\d+)-[a-z0-9]*$/.exec(n);
    if (!m || !m[1]!.startsWith(prefix)) continue;
    const pid = Number(m[2]);
    const stale = pid === process.pid ? !isLiveTempFile(join(dir, n)) : !pidAlive(pid);
    if (stale) await unlink(join(dir, n)).catch(() => undefined);
  }
}
