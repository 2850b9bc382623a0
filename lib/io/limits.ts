// The resource caps of the readers, in one place: each is a default a real file stays
// far below, raisable with an environment variable (read at each use, so a process can
// set it before loading). A file over a cap is refused before the large allocation
// with an error that names the cap, its variable and the usual cure. The README's
// "Limits" section lists the same table.

export interface LimitSpec {
  /** Environment variable that overrides the default. */
  env: string;
  /** Default value. */
  def: number;
  /** What it bounds, for messages and the README. */
  what: string;
}

export const LIMITS = {
  /** Bytes a broadcast/overlapping (e.g. stride-0) tensor view may materialise to beyond its storage. */
  expandedBytes: { env: 'RARGEN_MAX_EXPANDED_BYTES', def: 256 * 2 ** 20, what: 'bytes of a tensor view that repeats stored elements (stride 0 / overlapping strides)' },
  /** Bytes of a deflate-compressed zip member (np.savez_compressed) read whole; row reads stream and are not capped. */
  inflateBytes: { env: 'RARGEN_MAX_INFLATE_BYTES', def: 2 ** 30, what: 'bytes one compressed zip member may inflate to in memory' },
  /** Entries of a pickle's memo (a torch checkpoint of ~1,000 tensors uses ~10,000). */
  pickleMemo: { env: 'RARGEN_MAX_PICKLE_MEMO', def: 1_000_000, what: 'pickle memo entries' },
  /** Items on a pickle's stack or in one list. */
  pickleItems: { env: 'RARGEN_MAX_PICKLE_ITEMS', def: 10_000_000, what: 'items on a pickle stack or in one pickled list' },
  /** Pixels of one decoded image (Pillow's MAX_IMAGE_PIXELS error threshold, 2 x 89,478,485). */
  imagePixels: { env: 'RARGEN_MAX_IMAGE_PIXELS', def: 178_956_970, what: 'pixels of one decoded image' },
} as const satisfies Record<string, LimitSpec>;

export type LimitName = keyof typeof LIMITS;

/** The cap's current value: the environment variable when set (a positive integer, else a RangeError), else the default. */
export function limit(name: LimitName): number {
  const spec: LimitSpec = LIMITS[name];
  const raw = process.env[spec.env];
  if (raw !== undefined && raw !== '') {
    const v = Number(raw);
    if (Number.isSafeInteger(v) && v > 0) return v;
    throw new RangeError(`rargen: the environment variable ${spec.env} must be a positive integer (${spec.what}) but is '${raw}'`);
  }
  return spec.def;
}

/** " (the limit is N <what>; raise it with ENV=...)": the tail of a refusal message. */
export function overLimit(name: LimitName): string {
  const spec: LimitSpec = LIMITS[name];
  return `over the limit of ${limit(name)} ${spec.what} (raise it with the environment variable ${spec.env})`;
}
