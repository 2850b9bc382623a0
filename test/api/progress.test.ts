// The CLI progress bar: its text, and silence when not on a TTY.
import { describe, expect, it } from 'vitest';
import { formatDuration, formatProgress, ProgressBar } from '../../lib/progress.js';

function fakeStream(isTTY: boolean) {
  const writes: string[] = [];
  return { writes, stream: { isTTY, columns: 120, write: (s: string) => (writes.push(s), true) } as unknown as NodeJS.WriteStream };
}

describe('progress', () => {
  it('formats percent, count, rate and ETA', () => {
    expect(formatProgress(25, 100, 5, { label: 'gen', unit: 'img', width: 10 })).toBe('gen [###-------]  25% 25/100 5.00 img/s ETA 00:15');
    expect(formatProgress(0, 10, 0, { width: 4 })).toBe('[----]   0% 0/10 0.00 it/s ETA --:--');
    expect(formatProgress(7.6, 10, 2, { width: 4 })).toBe('[###-]  76% 7/10 3.80 it/s ETA 00:01');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(NaN)).toBe('--:--');
  });

  it('draws on a TTY, at most every 100 ms, and ends the line', () => {
    let t = 0;
    const { writes, stream } = fakeStream(true);
    const bar = new ProgressBar(4, { stream, now: () => t, unit: 'img' });
    bar.update(1);
    t = 50;
    bar.update(2); // too soon
    t = 1000;
    bar.update(4); // done: always drawn
    bar.finish();
    expect(writes).toHaveLength(3);
    expect(writes[0]).toMatch(/^\r\[#+-+\]  25% 1\/4 /);
    expect(writes[1]).toContain('100% 4/4 4.00 img/s ETA 00:00');
    expect(writes[2]).toBe('\n');
  });

  it('prints plain lines when the stream is not a TTY: at the start, every 10 s and at the end', () => {
    let t = 0;
    const { writes, stream } = fakeStream(false);
    const bar = new ProgressBar(100, { stream, now: () => t, label: 'gen', unit: 'img' });
    bar.update(1); // first: printed
    t = 9_999;
    bar.update(2); // within 10 s: not
    t = 10_001;
    bar.update(3); // printed
    t = 12_000;
    bar.update(100); // the end: printed
    bar.update(100); // once
    bar.finish();
    expect(writes).toHaveLength(3);
    expect(writes[0]).toMatch(/^gen \[-+\]   1% 1\/100 .*\n$/);
    expect(writes[1]).toMatch(/^gen \[.*\]   3% 3\/100 /);
    expect(writes[2]).toMatch(/100% 100\/100 /);
    expect(writes.join('')).not.toContain('\r');
  });

  it('is silent with enabled: false', () => {
    const { writes, stream } = fakeStream(false);
    const bar = new ProgressBar(4, { stream, enabled: false });
    bar.update(1);
    bar.update(4);
    bar.finish();
    expect(writes).toEqual([]);
  });
});
