// The server's counters, gauges and histograms, written out in the Prometheus text
// exposition format (version 0.0.4) at GET /metrics. Nothing here is shared across
// processes; a metric is created once, by name, and rendered in creation order.

type Labels = Record<string, string>;

function labelText(labels: Labels): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) return '';
  return '{' + keys.map((k) => `${k}="${labels[k]!.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',') + '}';
}

function fmt(v: number): string {
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  if (Number.isNaN(v)) return 'NaN';
  return String(v);
}

interface Metric {
  render(): string[];
}

export class Counter implements Metric {
  #values = new Map<string, { labels: Labels; value: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  inc(labels: Labels = {}, by = 1): void {
    const key = labelText(labels);
    const e = this.#values.get(key);
    if (e) e.value += by;
    else this.#values.set(key, { labels, value: by });
  }
  get(labels: Labels = {}): number {
    return this.#values.get(labelText(labels))?.value ?? 0;
  }
  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    if (this.#values.size === 0) out.push(`${this.name} 0`);
    for (const { labels, value } of this.#values.values()) out.push(`${this.name}${labelText(labels)} ${fmt(value)}`);
    return out;
  }
}

export class Gauge implements Metric {
  constructor(
    readonly name: string,
    readonly help: string,
    /** Read when rendered. */
    readonly read: () => number,
  ) {}
  render(): string[] {
    return [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`, `${this.name} ${fmt(this.read())}`];
  }
}

export class Histogram implements Metric {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(
    readonly name: string,
    readonly help: string,
    /** Upper bounds, increasing; +Inf is added. */
    readonly buckets: readonly number[],
  ) {
    this.counts = buckets.map(() => 0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) this.counts[i]!++;
  }
  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => out.push(`${this.name}_bucket{le="${fmt(b)}"} ${this.counts[i]}`));
    out.push(`${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${fmt(this.sum)}`, `${this.name}_count ${this.count}`);
    return out;
  }
}

/** Completions per second over a sliding window. */
export class RateWindow {
  #times: number[] = [];
  constructor(readonly windowMs = 10_000) {}
  mark(n = 1, now = performance.now()): void {
    for (let i = 0; i < n; i++) this.#times.push(now);
    this.#trim(now);
  }
  rate(now = performance.now()): number {
    this.#trim(now);
    return this.#times.length / (this.windowMs / 1000);
  }
  #trim(now: number): void {
    let i = 0;
    while (i < this.#times.length && this.#times[i]! < now - this.windowMs) i++;
    if (i) this.#times.splice(0, i);
  }
}

export class Registry {
  #metrics: Metric[] = [];
  add<M extends Metric>(m: M): M {
    this.#metrics.push(m);
    return m;
  }
  /** The Prometheus text exposition of every metric. */
  render(): string {
    return this.#metrics.flatMap((m) => m.render()).join('\n') + '\n';
  }
}

/** The latency buckets (seconds) of the request histogram. */
export const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300];
