// ZIP reading and writing, hand-written. Why not yauzl/archiver: torch checkpoints are
// up to ~6 GB and sample archives ~10 GB, and we need (a) the central directory only,
// read from the file's tail (zip64 included), then each member's bytes by
// (offset, length) with positional reads and no stream plumbing, and (b) a streaming
// writer of STORED members whose data starts 64-byte aligned (as torch's writer does,
// so torch can mmap), with zip64 fields when sizes/offsets pass 4 GiB, written to a
// temp file and renamed into place. Both fit in a few hundred lines.
import { createInflateRaw } from 'node:zlib';
import { ioFail, RargenIOError } from './errors.js';
import { AtomicFile, RandomAccessFile, writeFully } from './file.js';
import { crc32 } from './crc32.js';

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const U32_MAX = 0xffffffff;
const U16_MAX = 0xffff;

/** Guards against hostile archives: a central directory larger than this is refused. */
const MAX_CENTRAL_DIRECTORY = 256 * 1024 * 1024;

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflated. */
  method: number;
  flags: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

function u64(buf: Buffer, off: number): number {
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) return Number.MAX_SAFE_INTEGER; // out of any file: caught by bounds checks
  return Number(v);
}

/** Inflate raw deflate `raw` into `out`; errors if it yields more than out.length bytes. Returns the bytes produced. */
function inflateInto(raw: Buffer, out: Buffer, path: string, name: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const z = createInflateRaw({ chunkSize: 1 << 20 });
    let n = 0;
    let done = false;
    const fail = (msg: string, cause?: unknown): void => {
      if (done) return;
      done = true;
      z.destroy();
      reject(new RargenIOError(path, `${path}: zip entry '${name}': ${msg}`, { cause }));
    };
    z.on('data', (c: Buffer) => {
      if (done) return;
      if (n + c.length > out.length) return fail(`inflates to more than the ${out.length} bytes its header says; the archive is corrupt`);
      c.copy(out, n);
      n += c.length;
    });
    z.on('error', (e) => fail(`cannot inflate: ${e.message}`, e));
    z.on('end', () => {
      if (done) return;
      done = true;
      resolve(n);
    });
    z.end(raw);
  });
}

export class ZipReader {
  private dataOffsets = new Map<string, number>();

  private constructor(
    readonly file: RandomAccessFile,
    readonly entries: ReadonlyMap<string, ZipEntry>,
    /** Entry names in central-directory order. */
    readonly names: readonly string[],
  ) {}

  get path(): string {
    return this.file.path;
  }

  /** Parse the central directory of an opened file (reads only the tail and the directory). */
  static async open(file: RandomAccessFile): Promise<ZipReader> {
    const path = file.path;
    const size = file.size;
    if (size < 22) ioFail(path, `not a zip archive: ${size} bytes is shorter than an end-of-central-directory record (22 bytes)`);
    const tailLen = Math.min(size, 22 + 65535 + 20);
    const tailStart = size - tailLen;
    const tail = await file.read(tailStart, tailLen, 'zip end of central directory');
    let eocd = -1;
    for (let p = tailLen - 22; p >= 0; p--) {
      if (tail.readUInt32LE(p) === SIG_EOCD && p + 22 + tail.readUInt16LE(p + 20) <= tailLen) {
        eocd = p;
        break;
      }
    }
    if (eocd < 0) ioFail(path, 'no zip end-of-central-directory record found in the last bytes of the file; the file is truncated or not a zip archive');
    let count = tail.readUInt16LE(eocd + 10);
    let cdSize = tail.readUInt32LE(eocd + 12);
    let cdOffset = tail.readUInt32LE(eocd + 16);
    const eocdAbs = tailStart + eocd;
    let cdEnd = eocdAbs;
    // zip64: a locator just before the EOCD points to the zip64 EOCD record.
    if (eocd >= 20 && tail.readUInt32LE(eocd - 20) === SIG_ZIP64_LOCATOR) {
      const z64Off = u64(tail, eocd - 20 + 8);
      if (z64Off + 56 > eocdAbs - 20) ioFail(path, `zip64 end-of-central-directory locator points to offset ${z64Off}, outside the file`);
      const z = await file.read(z64Off, 56, 'zip64 end of central directory');
      if (z.readUInt32LE(0) !== SIG_ZIP64_EOCD) ioFail(path, `no zip64 end-of-central-directory record at offset ${z64Off} (bad signature)`);
      count = u64(z, 32);
      cdSize = u64(z, 40);
      cdOffset = u64(z, 48);
      cdEnd = z64Off;
    } else if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
      ioFail(path, 'zip end-of-central-directory record needs zip64 fields but no zip64 locator precedes it');
    }
    if (cdOffset + cdSize > cdEnd) {
      ioFail(path, `zip central directory at offset ${cdOffset} (size ${cdSize}) lies outside the file before its end record at ${cdEnd} (file size ${size}); the archive is corrupt or truncated`);
    }
    if (cdSize > MAX_CENTRAL_DIRECTORY) ioFail(path, `zip central directory of ${cdSize} bytes is larger than the ${MAX_CENTRAL_DIRECTORY} bytes rargen accepts`);
    if (count * 46 > cdSize) ioFail(path, `zip central directory of ${cdSize} bytes cannot hold the ${count} entries its end record claims`);
    const cd = await file.read(cdOffset, cdSize, 'zip central directory');
    const entries = new Map<string, ZipEntry>();
    const names: string[] = [];
    let p = 0;
    // Every entry the directory holds, as Python's zipfile reads it: the end record's
    // count is not trusted (a wrong count would silently drop members).
    for (let i = 0; p < cdSize; i++) {
      if (p + 46 > cdSize || cd.readUInt32LE(p) !== SIG_CENTRAL) {
        ioFail(path, `zip central directory entry ${i} at offset ${cdOffset + p} has a bad signature; the central directory offset is wrong or the archive is corrupt`);
      }
      const flags = cd.readUInt16LE(p + 8);
      const method = cd.readUInt16LE(p + 10);
      const crc = cd.readUInt32LE(p + 16);
      let compressedSize = cd.readUInt32LE(p + 20);
      let usize = cd.readUInt32LE(p + 24);
      const nameLen = cd.readUInt16LE(p + 28);
      const extraLen = cd.readUInt16LE(p + 30);
      const commentLen = cd.readUInt16LE(p + 32);
      let localHeaderOffset = cd.readUInt32LE(p + 42);
      const end = p + 46 + nameLen + extraLen + commentLen;
      if (end > cdSize) ioFail(path, `zip central directory entry ${i} runs past the end of the directory`);
      const name = cd.toString(flags & 0x800 ? 'utf8' : 'latin1', p + 46, p + 46 + nameLen);
      // zip64 extended information: present fields are those whose 32-bit value is 0xFFFFFFFF, in order.
      let e = p + 46 + nameLen;
      const extraEnd = e + extraLen;
      while (e + 4 <= extraEnd) {
        const id = cd.readUInt16LE(e);
        const len = cd.readUInt16LE(e + 2);
        if (e + 4 + len > extraEnd) ioFail(path, `zip entry '${name}': extra field runs past its end`);
        if (id === 0x0001) {
          let q = e + 4;
          const need = (ok: boolean): number => {
            if (!ok) return -1;
            if (q + 8 > e + 4 + len) ioFail(path, `zip entry '${name}': zip64 extra field is too short`);
            const v = u64(cd, q);
            q += 8;
            return v;
          };
          const us = need(usize === U32_MAX);
          if (us >= 0) usize = us;
          const cs = need(compressedSize === U32_MAX);
          if (cs >= 0) compressedSize = cs;
          const lo = need(localHeaderOffset === U32_MAX);
          if (lo >= 0) localHeaderOffset = lo;
        }
        e += 4 + len;
      }
      if (usize === U32_MAX || compressedSize === U32_MAX || localHeaderOffset === U32_MAX) {
        ioFail(path, `zip entry '${name}': sizes/offset marked zip64 but no zip64 extra field gives them`);
      }
      if (localHeaderOffset + 30 + compressedSize > cdOffset) {
        ioFail(path, `zip entry '${name}': data at offset ${localHeaderOffset} (+${compressedSize} bytes) overlaps the central directory at ${cdOffset}; the archive is corrupt`);
      }
      if (entries.has(name)) ioFail(path, `zip entry '${name}' appears twice`);
      entries.set(name, { name, method, flags, crc32: crc, compressedSize, size: usize, localHeaderOffset });
      names.push(name);
      p = end;
    }
    return new ZipReader(file, entries, names);
  }

  entry(name: string): ZipEntry {
    const e = this.entries.get(name);
    if (!e) ioFail(this.path, `zip entry '${name}' not found`);
    return e;
  }

  /** Absolute offset of an entry's data (reads its local header once). */
  async dataOffset(entry: ZipEntry): Promise<number> {
    const cached = this.dataOffsets.get(entry.name);
    if (cached !== undefined) return cached;
    const h = await this.file.read(entry.localHeaderOffset, 30, `zip local header of '${entry.name}'`);
    if (h.readUInt32LE(0) !== SIG_LOCAL) {
      ioFail(this.path, `zip entry '${entry.name}': no local file header at offset ${entry.localHeaderOffset} (bad signature)`);
    }
    const off = entry.localHeaderOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
    if (off + entry.compressedSize > this.file.size) {
      ioFail(this.path, `zip entry '${entry.name}': data at offset ${off} (+${entry.compressedSize} bytes) runs past the end of the file (size ${this.file.size}); the file is truncated`);
    }
    this.dataOffsets.set(entry.name, off);
    return off;
  }

  /** Offset of a STORED entry's data, erroring clearly on compressed entries. */
  async storedDataOffset(entry: ZipEntry, what: string): Promise<number> {
    if (entry.method !== 0) {
      ioFail(this.path, `${what}: zip entry '${entry.name}' is compressed (method ${entry.method}); rargen reads only stored (uncompressed) entries here, as torch.save writes them`);
    }
    return this.dataOffset(entry);
  }

  /**
   * The whole (decompressed) content of a small entry, CRC-checked. Stored and
   * deflated entries; `maxSize` guards against hostile sizes.
   */
  async readAll(entry: ZipEntry, maxSize = 1 << 30, sizeHint = ''): Promise<Buffer> {
    if (entry.size > maxSize) ioFail(this.path, `zip entry '${entry.name}' is ${entry.size} bytes, more than the ${maxSize} this reader loads at once${sizeHint}`);
    if (entry.method !== 0 && entry.method !== 8) {
      ioFail(this.path, `zip entry '${entry.name}' uses compression method ${entry.method}; only stored (0) and deflate (8) are supported`);
    }
    const off = await this.dataOffset(entry);
    const raw = await this.file.read(off, entry.compressedSize, `zip entry '${entry.name}'`);
    let out: Buffer;
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.size) ioFail(this.path, `zip entry '${entry.name}' is stored but its sizes differ (${entry.compressedSize} vs ${entry.size})`);
      out = raw;
    } else if (entry.method === 8) {
      // Inflated straight into one buffer of the declared size (no chunk list + concat
      // copy); more output than declared stops the inflater at once.
      out = Buffer.allocUnsafe(entry.size);
      const got = await inflateInto(raw, out, this.path, entry.name);
      if (got !== entry.size) ioFail(this.path, `zip entry '${entry.name}' inflates to ${got} bytes, not the ${entry.size} its header says`);
    } else {
      ioFail(this.path, `zip entry '${entry.name}' uses compression method ${entry.method}; only stored (0) and deflate (8) are supported`);
    }
    const c = crc32(out);
    if (c !== entry.crc32) ioFail(this.path, `zip entry '${entry.name}' fails its CRC-32 check (0x${c.toString(16)} vs 0x${entry.crc32.toString(16)}); the file is corrupt`);
    return out;
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}

// ---------------------------------------------------------------------------------
// Writer

export interface ZipWriterOptions {
  /** Align each entry's data to this many bytes (torch uses 64) via a padding extra field. 0/1 = no alignment. */
  align?: number;
  /**
   * Sizes/offsets >= this use zip64 fields. Default 0xFFFFFFFF (the format's limit);
   * tests lower it to exercise the zip64 paths on small files.
   */
  zip64Threshold?: number;
}

interface WrittenEntry {
  name: Buffer;
  crc: number;
  size: number;
  offset: number;
}

const DOS_TIME = 0;
const DOS_DATE = (0 << 9) | (1 << 5) | 1; // 1980-01-01, fixed so output is reproducible

/**
 * Streaming writer of STORED zip entries. Each entry's size is declared up front
 * (beginEntry), its CRC-32 is computed while writing and patched into the local header
 * at endEntry (positional write; no data descriptors). The archive is written to a temp
 * file and renamed onto `path` by close(); abort() removes the temp file.
 */
export class ZipWriter {
  private pos = 0;
  private written: WrittenEntry[] = [];
  private cur: { name: Buffer; size: number; offset: number; crc: number; done: number } | null = null;
  private closed = false;
  private readonly align: number;
  private readonly limit: number;

  private constructor(
    private readonly out: AtomicFile,
    opts: ZipWriterOptions,
  ) {
    this.align = opts.align ?? 0;
    this.limit = opts.zip64Threshold ?? U32_MAX;
    if (!(this.limit >= 1 && this.limit <= U32_MAX)) throw new RangeError('zip64Threshold must be in 1..0xFFFFFFFF');
  }

  get path(): string {
    return this.out.path;
  }

  static async create(path: string, opts: ZipWriterOptions = {}): Promise<ZipWriter> {
    return new ZipWriter(await AtomicFile.create(path), opts);
  }

  /** Start a stored entry of exactly `size` bytes. */
  async beginEntry(name: string, size: number): Promise<void> {
    if (this.closed) ioFail(this.path, 'zip writer already closed');
    if (this.cur) ioFail(this.path, `zip entry '${this.cur.name.toString()}' not ended before '${name}'`);
    if (!Number.isSafeInteger(size) || size < 0) ioFail(this.path, `zip entry '${name}': bad size ${size}`);
    const nameBuf = Buffer.from(name, 'utf8');
    if (nameBuf.length > 0xffff) ioFail(this.path, `zip entry name too long: '${name.slice(0, 80)}...'`);
    const zip64 = size >= this.limit;
    const z64Len = zip64 ? 20 : 0;
    let pad = 0;
    if (this.align > 1) {
      const dataStart = this.pos + 30 + nameBuf.length + z64Len;
      pad = (this.align - (dataStart % this.align)) % this.align;
      if (pad > 0 && pad < 4) pad += this.align; // the padding field needs 4 bytes of header
    }
    const h = Buffer.alloc(30 + nameBuf.length + z64Len + pad);
    h.writeUInt32LE(SIG_LOCAL, 0);
    h.writeUInt16LE(zip64 ? 45 : 20, 4);
    h.writeUInt16LE(0x800, 6); // names are UTF-8
    h.writeUInt16LE(0, 8); // stored
    h.writeUInt16LE(DOS_TIME, 10);
    h.writeUInt16LE(DOS_DATE, 12);
    h.writeUInt32LE(0, 14); // CRC patched at endEntry
    h.writeUInt32LE(zip64 ? U32_MAX : size, 18);
    h.writeUInt32LE(zip64 ? U32_MAX : size, 22);
    h.writeUInt16LE(nameBuf.length, 26);
    h.writeUInt16LE(z64Len + pad, 28);
    nameBuf.copy(h, 30);
    let e = 30 + nameBuf.length;
    if (zip64) {
      h.writeUInt16LE(0x0001, e);
      h.writeUInt16LE(16, e + 2);
      h.writeBigUInt64LE(BigInt(size), e + 4);
      h.writeBigUInt64LE(BigInt(size), e + 12);
      e += 20;
    }
    if (pad > 0) {
      // same padding record torch's writer uses: id "FB", then 'Z' bytes
      h.write('FB', e, 'latin1');
      h.writeUInt16LE(pad - 4, e + 2);
      h.fill('Z', e + 4, e + pad);
    }
    const offset = this.pos;
    await writeFully(this.out.fh, h, this.pos);
    this.pos += h.length;
    this.cur = { name: nameBuf, size, offset, crc: 0, done: 0 };
  }

  /** Append bytes to the current entry. */
  async write(chunk: Uint8Array): Promise<void> {
    const c = this.cur;
    if (!c) ioFail(this.path, 'zip write() outside an entry');
    if (c.done + chunk.byteLength > c.size) {
      ioFail(this.path, `zip entry '${c.name.toString()}': ${c.done + chunk.byteLength} bytes written, more than the ${c.size} declared`);
    }
    c.crc = crc32(chunk, c.crc);
    await writeFully(this.out.fh, chunk, this.pos);
    this.pos += chunk.byteLength;
    c.done += chunk.byteLength;
  }

  async endEntry(): Promise<void> {
    const c = this.cur;
    if (!c) ioFail(this.path, 'zip endEntry() outside an entry');
    if (c.done !== c.size) ioFail(this.path, `zip entry '${c.name.toString()}': ${c.done} bytes written, but ${c.size} were declared`);
    const crcBuf = Buffer.alloc(4);
    crcBuf.writeUInt32LE(c.crc >>> 0, 0);
    await writeFully(this.out.fh, crcBuf, c.offset + 14);
    this.written.push({ name: c.name, crc: c.crc >>> 0, size: c.size, offset: c.offset });
    this.cur = null;
  }

  /** Convenience: a whole entry from one buffer. */
  async addEntry(name: string, data: Uint8Array): Promise<void> {
    await this.beginEntry(name, data.byteLength);
    await this.write(data);
    await this.endEntry();
  }

  /** Write the central directory and end records, then rename the temp file onto the final path. */
  async close(): Promise<void> {
    if (this.cur) ioFail(this.path, `zip entry '${this.cur.name.toString()}' not ended before close()`);
    if (this.closed) return;
    this.closed = true;
    const lim = this.limit;
    const parts: Buffer[] = [];
    const cdOffset = this.pos;
    for (const w of this.written) {
      const big = [w.size >= lim, w.size >= lim, w.offset >= lim];
      const n64 = big.filter(Boolean).length;
      const z64Len = n64 ? 4 + 8 * n64 : 0;
      const h = Buffer.alloc(46 + w.name.length + z64Len);
      h.writeUInt32LE(SIG_CENTRAL, 0);
      h.writeUInt16LE((3 << 8) | 45, 4); // made by unix, spec 4.5
      h.writeUInt16LE(n64 ? 45 : 20, 6);
      h.writeUInt16LE(0x800, 8);
      h.writeUInt16LE(0, 10);
      h.writeUInt16LE(DOS_TIME, 12);
      h.writeUInt16LE(DOS_DATE, 14);
      h.writeUInt32LE(w.crc, 16);
      h.writeUInt32LE(big[1] ? U32_MAX : w.size, 20);
      h.writeUInt32LE(big[0] ? U32_MAX : w.size, 24);
      h.writeUInt16LE(w.name.length, 28);
      h.writeUInt16LE(z64Len, 30);
      h.writeUInt32LE(0o100644 * 0x10000, 38); // external attrs: regular file rw-r--r--
      h.writeUInt32LE(big[2] ? U32_MAX : w.offset, 42);
      w.name.copy(h, 46);
      if (n64) {
        let e = 46 + w.name.length;
        h.writeUInt16LE(0x0001, e);
        h.writeUInt16LE(8 * n64, e + 2);
        e += 4;
        if (big[0]) (h.writeBigUInt64LE(BigInt(w.size), e), (e += 8));
        if (big[1]) (h.writeBigUInt64LE(BigInt(w.size), e), (e += 8));
        if (big[2]) (h.writeBigUInt64LE(BigInt(w.offset), e), (e += 8));
      }
      parts.push(h);
    }
    const cdSize = parts.reduce((s, b) => s + b.length, 0);
    const count = this.written.length;
    const need64 = count >= Math.min(U16_MAX, lim) || cdSize >= lim || cdOffset >= lim;
    if (need64) {
      const z = Buffer.alloc(56 + 20);
      z.writeUInt32LE(SIG_ZIP64_EOCD, 0);
      z.writeBigUInt64LE(44n, 4);
      z.writeUInt16LE((3 << 8) | 45, 12);
      z.writeUInt16LE(45, 14);
      z.writeUInt32LE(0, 16);
      z.writeUInt32LE(0, 20);
      z.writeBigUInt64LE(BigInt(count), 24);
      z.writeBigUInt64LE(BigInt(count), 32);
      z.writeBigUInt64LE(BigInt(cdSize), 40);
      z.writeBigUInt64LE(BigInt(cdOffset), 48);
      z.writeUInt32LE(SIG_ZIP64_LOCATOR, 56);
      z.writeUInt32LE(0, 60);
      z.writeBigUInt64LE(BigInt(cdOffset + cdSize), 64);
      z.writeUInt32LE(1, 72);
      parts.push(z);
    }
    const eocd = Buffer.alloc(22);
    eocd.writeUInt32LE(SIG_EOCD, 0);
    eocd.writeUInt16LE(need64 ? U16_MAX : count, 8);
    eocd.writeUInt16LE(need64 ? U16_MAX : count, 10);
    eocd.writeUInt32LE(need64 ? U32_MAX : cdSize, 12);
    eocd.writeUInt32LE(need64 ? U32_MAX : cdOffset, 16);
    parts.push(eocd);
    await writeFully(this.out.fh, Buffer.concat(parts), this.pos);
    await this.out.commit();
  }

  /** Give up: remove the temp file; the final path is untouched. */
  async abort(): Promise<void> {
    this.closed = true;
    await this.out.abort();
  }
}
