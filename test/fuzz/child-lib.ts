// The child side of test/fuzz/harness.ts: runs cases [from, to) of argv and reports each
// on stdout. After every case the child's peak RSS (getrusage, so short spikes count)
// is compared with its baseline: a case that grew it by more than FUZZ_MEM_CAP_MB is
// reported over-memory and the child exits (the peak cannot come down again).
export type Outcome = { outcome: 'loaded' | 'clean' | 'unclean'; detail?: string };

export function caseRange(): { seed: number; from: number; to: number; rest: string[] } {
  const [seed, from, to, ...rest] = process.argv.slice(2);
  return { seed: Number(seed), from: Number(from), to: Number(to), rest };
}

const peakMb = (): number => process.resourceUsage().maxRSS / 1024;

export async function runCases(from: number, to: number, one: (n: number) => Promise<Outcome>): Promise<void> {
  const cap = Number(process.env.FUZZ_MEM_CAP_MB ?? 512);
  const base = peakMb();
  const out = (s: string) => process.stdout.write(s + '\n');
  for (let n = from; n < to; n++) {
    out(`S ${n}`);
    let r: Outcome;
    try {
      r = await one(n);
    } catch (e) {
      r = { outcome: 'unclean', detail: `harness: ${(e as Error)?.stack ?? String(e)}` };
    }
    const grew = peakMb() - base;
    if (grew > cap) {
      out(`E ${n} overmem peak RSS grew ${grew.toFixed(0)} MiB (cap ${cap} MiB)${r.detail ? ': ' + oneLine(r.detail) : ''}`);
      out(`R ${n + 1}`); // resume in a fresh child
      process.exit(0);
    }
    out(`E ${n} ${r.outcome}${r.detail ? ' ' + oneLine(r.detail) : ''}`);
  }
  out('D');
}

export const oneLine = (s: string): string => s.replace(/\s+/g, ' ').slice(0, 600);
