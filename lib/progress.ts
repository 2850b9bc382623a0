// A one-line progress bar for the CLI: percent, items/s and ETA, redrawn at most
// ten times a second on a TTY. When the stream is not a TTY (a pipe, a log file, CI)
// it prints the same text as plain lines instead: at the start, at least every 10 s
// ($RARGEN_PROGRESS_INTERVAL_MS overrides) and at the end, so a long run is never silent.

export interface ProgressBarOptions {
  /** Label printed before the bar. */
  label?: string;
  /** Unit for the rate, e.g. 'img' gives '3.2 img/s'. */
  unit?: string;
  /** Defaults to process.stderr. */
  stream?: NodeJS.WriteStream;
  /** Force drawing on (true) or off (false); defaults to stream.isTTY. */
  enabled?: boolean;
  /** Plain progress lines when not drawing; defaults to true when `enabled` is not given and the stream is not a TTY. */
  lines?: boolean;
  /** Interval between plain lines in ms (default $RARGEN_PROGRESS_INTERVAL_MS, else 10000). */
  lineIntervalMs?: number;
  /** Clock in ms, for tests. */
  now?: () => number;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  const two = (x: number) => String(x).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(ss)}` : `${two(m)}:${two(ss)}`;
}

/** The text of one progress line (no escape codes). */
export function formatProgress(done: number, total: number, elapsedSeconds: number, opts: { label?: string; unit?: string; width?: number } = {}): string {
  const width = opts.width ?? 30;
  const frac = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
  const filled = Math.round(frac * width);
  const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
  const rate = elapsedSeconds > 0 ? done / elapsedSeconds : 0;
  const eta = rate > 0 ? (total - done) / rate : NaN;
  const pct = (frac * 100).toFixed(0).padStart(3);
  const label = opts.label ? opts.label + ' ' : '';
  const unit = opts.unit ?? 'it';
  const count = Number.isInteger(total) ? `${Math.floor(done)}/${total}` : `${done.toFixed(1)}/${total.toFixed(1)}`;
  return `${label}[${bar}] ${pct}% ${count} ${rate.toFixed(rate >= 10 ? 0 : 2)} ${unit}/s ETA ${formatDuration(eta)}`;
}

export class ProgressBar {
  private readonly stream: NodeJS.WriteStream;
  private readonly enabled: boolean;
  private readonly now: () => number;
  private readonly start: number;
  private lastDraw = -Infinity;
  private drawn = false;
  private readonly lines: boolean;
  private readonly lineInterval: number;
  private lastLine = -Infinity;
  private lastDone = -1;

  constructor(
    private total: number,
    private readonly opts: ProgressBarOptions = {},
  ) {
    this.stream = opts.stream ?? process.stderr;
    this.enabled = opts.enabled ?? Boolean(this.stream.isTTY);
    this.lines = !this.enabled && (opts.lines ?? opts.enabled === undefined);
    const env = Number(process.env.RARGEN_PROGRESS_INTERVAL_MS);
    this.lineInterval = opts.lineIntervalMs ?? (Number.isFinite(env) && env > 0 ? env : 10_000);
    this.now = opts.now ?? (() => performance.now());
    this.start = this.now();
  }

  /** Sets the completed count (and optionally a new total); redraws if due. */
  update(done: number, total = this.total): void {
    this.total = total;
    if (!this.enabled) {
      if (!this.lines || done === this.lastDone) return;
      const t = this.now();
      const end = total > 0 && done >= total;
      if (!end && t - this.lastLine < this.lineInterval) return;
      this.lastLine = t;
      this.lastDone = done;
      this.stream.write(formatProgress(done, total, (t - this.start) / 1000, { label: this.opts.label, unit: this.opts.unit, width: 20 }) + '\n');
      return;
    }
    const t = this.now();
    if (done < total && t - this.lastDraw < 100) return;
    this.lastDraw = t;
    const cols = this.stream.columns ?? 100;
    const line = formatProgress(done, total, (t - this.start) / 1000, { label: this.opts.label, unit: this.opts.unit, width: Math.max(10, Math.min(40, cols - 60)) });
    this.stream.write('\r' + line.slice(0, Math.max(0, cols - 1)) + '\x1b[K');
    this.drawn = true;
  }

  /** Ends the line (if anything was drawn). */
  finish(): void {
    if (this.enabled && this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}
