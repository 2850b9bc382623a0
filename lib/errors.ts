// Error classes shared across the API that have no better home. Every rargen error has a
// stable `code` (RARGEN_*) to branch on; messages may change, codes do not. The other
// error classes live beside the code that throws them and are all exported from index.ts.

/** An invalid argument to a rargen function. */
export class ValidationError extends TypeError {
  override name = 'ValidationError';
  readonly code: string = 'RARGEN_INVALID_ARGUMENT';
}

/** A class name that matches no class, or more than one (the candidates are listed). */
export class ClassNameError extends ValidationError {
  override name = 'ClassNameError';
  override readonly code = 'RARGEN_CLASS_NAME';
  constructor(
    message: string,
    /** The name as given. */
    readonly query: string,
    /** Class ids that could be meant, best first (empty when nothing is close). */
    readonly candidates: readonly number[],
  ) {
    super(message);
  }
}

/** A download that failed: HTTP status, dropped connection, offline, size or sha256 mismatch. */
export class DownloadError extends Error {
  override name = 'DownloadError';
  readonly code = 'RARGEN_DOWNLOAD';
  constructor(
    message: string,
    /** What went wrong: 'http', 'network', 'offline', 'size', 'sha256', 'content'. */
    readonly reason: 'http' | 'network' | 'offline' | 'size' | 'sha256' | 'content',
  ) {
    super(message);
  }
}

/** A released file asked for by name (e.g. 'rar-b') that is not in the cache folder yet. */
export class NotDownloadedError extends Error {
  override name = 'NotDownloadedError';
  readonly code = 'RARGEN_NOT_DOWNLOADED';
  constructor(
    message: string,
    readonly file: string,
    readonly path: string,
  ) {
    super(message);
  }
}

/** A lock file (lib/io/lock.ts) held by a process that may still run. */
export class LockedError extends Error {
  override name: string = 'LockedError';
  readonly code: string = 'RARGEN_LOCKED';
}

/** Another process samples the same shard, or merges the same run (lib/sample). */
export class SampleLockedError extends LockedError {
  override name = 'SampleLockedError';
  override readonly code = 'RARGEN_SAMPLE_LOCKED';
}

/** Not every image of a sampling run exists yet (mergeSamples). */
export class SamplesIncompleteError extends Error {
  override name = 'SamplesIncompleteError';
  readonly code = 'RARGEN_SAMPLES_INCOMPLETE';
  constructor(
    message: string,
    /** How many images are missing. */
    readonly missing: number,
  ) {
    super(message);
  }
}

/** A training checkpoint that cannot be written or read (lib/train/checkpoint.ts). */
export class CheckpointError extends Error {
  override name = 'CheckpointError';
  readonly code = 'RARGEN_CHECKPOINT';
}
