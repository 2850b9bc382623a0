// Child of checkpoint.test.ts: starts a save and SIGKILLs itself in the middle of it.
import { saveCheckpoint } from '../../lib/train/checkpoint.js';

const [dir, stage] = process.argv.slice(2) as [string, string];
const n = 4_000_000; // 16 MB per tensor
const t = () => ({ shape: [n], data: new Float32Array(n).fill(2) });
const params = new Map([['w', t()]]);
await saveCheckpoint(
  dir,
  {
    params,
    expAvg: new Map([['w', t()]]),
    expAvgSq: new Map([['w', t()]]),
    state: { step: 20, adamStep: 20, seed: 0, data: null, decayed: ['w'], config: {} },
  },
  {
    onStage: (s) => {
      if (s === stage) process.kill(process.pid, 'SIGKILL');
    },
  },
);
