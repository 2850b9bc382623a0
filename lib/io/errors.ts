// Errors raised by the checkpoint and array readers/writers. Every message starts with
// "rargen: " and names the file and the offending thing (tensor, zip entry, opcode,
// offset), so a user who sees only the message knows what to fix.

export class RargenIOError extends Error {
  readonly file: string;
  readonly code: string = 'RARGEN_IO';
  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super(`rargen: ${message}`, options);
    this.name = 'RargenIOError';
    this.file = file;
  }
}

/** Throw an error about `file`: "rargen: <file>: <what>". */
export function ioFail(file: string, what: string): never {
  throw new RargenIOError(file, `${file}: ${what}`);
}

/**
 * Run `fn`; any error that is not already a RargenIOError (a RangeError from a
 * typed array, a system error from fs) is wrapped so callers always get one error
 * type whose message names the file.
 */
export async function wrapErrors<T>(file: string, doing: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof RargenIOError) throw e;
    const msg = e instanceof Error ? e.message : String(e);
    throw new RargenIOError(file, `${file}: ${doing} failed: ${msg}`, { cause: e });
  }
}
