// Child for the harness's own test: case n does what n % 5 says (load, clean error,
// crash, hang, over-memory), so test/fuzz/fuzz.test.ts can check that each is seen and
// named by its case number.
import { caseRange, runCases } from './child-lib.js';

const { from, to } = caseRange();
await runCases(from, to, async (n) => {
  switch (n % 5) {
    case 0:
      return { outcome: 'loaded' };
    case 1:
      return { outcome: 'clean' };
    case 2:
      process.kill(process.pid, 'SIGSEGV');
      await new Promise((r) => setTimeout(r, 5000));
      return { outcome: 'loaded' };
    case 3:
      await new Promise(() => setInterval(() => undefined, 1000));
      return { outcome: 'loaded' };
    default: {
      const b = Buffer.alloc(320 * 2 ** 20);
      b.fill(1); // touch every page
      return { outcome: 'loaded', detail: String(b[12345]) };
    }
  }
});
