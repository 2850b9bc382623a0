// The pieces of data-parallel training that need no MPI: the per-rank slice of a
// step's randomness (lib/train/data.ts shardRandomness), the launcher's environment,
// the config comparison across ranks (lib/dist.ts), and the errors without MPI.
import { describe, expect, it } from 'vitest';
import { shardRandomness, stepRandomness } from '../../lib/train/data.js';
import { Dist, distSettings, firstDifference, ncclProbe, rankDevice, worldFromEnv } from '../../lib/dist.js';
import { native } from '../../lib/native.js';

const o = { seed: 5, seqLen: 8, codebookSize: 16, numClasses: 10, randomRatio: 0.5, classLabelDropout: 0.3 };
const classes = (n: number, off: number) => Int32Array.from({ length: n }, (_, i) => (i * 3 + off) % 10);

describe('shardRandomness', () => {
  it('one rank without accumulation draws exactly what stepRandomness draws', () => {
    const c = classes(4, 0);
    expect(shardRandomness(o, 7, c, { rank: 0, size: 1, accum: 1, micro: 0 })).toEqual(stepRandomness(o, 7, c));
  });

  it('2 ranks x 2 micro-batches x B=2 together are the global batch of 8 in file order', () => {
    const g = stepRandomness(o, 3, classes(8, 0)); // global sample j has class classes(8,0)[j]
    for (let micro = 0; micro < 2; micro++)
      for (let rank = 0; rank < 2; rank++) {
        // rank r's k-th sample of micro-batch u is global sample (u*B + k)*size + r
        const js = [0, 1].map((k) => (micro * 2 + k) * 2 + rank);
        const mine = Int32Array.from(js, (j) => classes(8, 0)[j]!);
        const s = shardRandomness(o, 3, mine, { rank, size: 2, accum: 2, micro });
        js.forEach((j, k) => {
          expect([...s.orders.subarray(k * 8, k * 8 + 8)]).toEqual([...g.orders.subarray(j * 8, j * 8 + 8)]);
          expect(s.condition[k]).toBe(g.condition[j]);
          expect(s.randomOrder[k]).toBe(g.randomOrder[j]);
        });
        if (micro || rank) expect(s.dropoutSeed).not.toEqual(g.dropoutSeed);
        else expect(s.dropoutSeed).toEqual(g.dropoutSeed);
      }
  });

  it('rejects a bad class id, naming it', () => {
    expect(() => shardRandomness(o, 0, Int32Array.of(0, 10), { rank: 0, size: 2, accum: 1, micro: 0 })).toThrow(/class ids between 0 and 9 but received 10 at \[1\]/);
  });
});

describe('dist', () => {
  it('reads rank and size from the launcher, and is a single process without one', () => {
    expect(worldFromEnv({})).toBeNull();
    expect(worldFromEnv({ OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_RANK: '2' })).toEqual({ rank: 2, size: 4, launcher: 'Open MPI' });
    expect(worldFromEnv({ PMIX_SIZE: '2', PMIX_RANK: '1' })?.rank).toBe(1);
    // srun --mpi=pmix: PMIX_RANK, and the size from Slurm
    expect(worldFromEnv({ PMIX_RANK: '5', SLURM_NTASKS: '32', SLURM_PROCID: '5' })).toEqual({ rank: 5, size: 32, launcher: 'PMIx' });
    expect(worldFromEnv({ SLURM_NTASKS: '32', SLURM_PROCID: '5' })).toBeNull(); // a batch script's own shell: no MPI job
    const d = Dist.fromEnv({});
    expect([d.rank, d.size, d.isRoot]).toEqual([0, 1, true]);
    expect(d.allgather('x')).toEqual(['x']);
    expect([...d.allreduce(Float64Array.of(2, 3))]).toEqual([2, 3]);
    expect(() => d.checkSame({ a: 1 })).not.toThrow();
  });

  it('firstDifference names the first differing leaf', () => {
    expect(firstDifference({ t: { seed: 7, b: 1 } }, { t: { seed: 42, b: 1 } }, '')).toEqual({ path: 't.seed', a: 7, b: 42 });
    expect(firstDifference({ t: [1, 2] }, { t: [1, 2] }, '')).toBeNull();
    expect(firstDifference({ x: 1 }, { x: 1, y: 2 }, '')?.path).toBe('y');
  });
});

describe('RARGEN_DIST_* and the local rank', () => {
  it('defaults, values, and errors naming the variable', () => {
    expect(distSettings({})).toEqual({ timeout: 300, bucketMB: 25, backend: 'auto', overlap: true, localRank: null });
    expect(distSettings({ RARGEN_DIST_TIMEOUT: '2.5', RARGEN_DIST_BUCKET_MB: '100', RARGEN_DIST_BACKEND: 'mpi', RARGEN_DIST_OVERLAP: '0', SLURM_LOCALID: '3' })).toEqual({ timeout: 2.5, bucketMB: 100, backend: 'mpi', overlap: false, localRank: 3 });
    // Open MPI's variable first, then Slurm's, then torchrun's
    expect(distSettings({ OMPI_COMM_WORLD_LOCAL_RANK: '1', SLURM_LOCALID: '2', LOCAL_RANK: '3' }).localRank).toBe(1);
    expect(distSettings({ LOCAL_RANK: '3' }).localRank).toBe(3);
    expect(() => distSettings({ RARGEN_DIST_TIMEOUT: '0' })).toThrow('rargen: RARGEN_DIST_TIMEOUT must be a number between 0.1 and 10000000 but is "0"');
    expect(() => distSettings({ RARGEN_DIST_TIMEOUT: '5m' })).toThrow(/RARGEN_DIST_TIMEOUT must be a number .* but is "5m"/);
    expect(() => distSettings({ RARGEN_DIST_BUCKET_MB: '0.5' })).toThrow(/RARGEN_DIST_BUCKET_MB must be a number between 1 and 4096/);
    expect(() => distSettings({ RARGEN_DIST_BACKEND: 'gloo' })).toThrow('rargen: RARGEN_DIST_BACKEND must be auto, nccl or mpi but is "gloo"');
    expect(() => distSettings({ RARGEN_DIST_OVERLAP: 'yes' })).toThrow('rargen: RARGEN_DIST_OVERLAP must be 0 or 1 but is "yes"');
    expect(() => distSettings({ LOCAL_RANK: '-1' })).toThrow('rargen: LOCAL_RANK must be a rank number (0, 1, ...) but is "-1"');
  });

  it('rankDevice: cuda:LOCAL_RANK per rank, cuda:0 where each rank sees one GPU, the rest unchanged', () => {
    const gpus = (n: number) => () => n;
    const w = (localRank: number | null, size = 8) => ({ size, localRank });
    expect(rankDevice('cuda', w(3), gpus(8))).toBe('cuda:3');
    expect(rankDevice('auto', w(3), gpus(8))).toBe('cuda:3');
    expect(rankDevice('auto', w(3), gpus(0))).toBe('auto'); // no GPU: the CPU, as for one process
    expect(rankDevice('cuda', w(3), gpus(1))).toBe('cuda:0'); // srun --gpus-per-task=1
    expect(rankDevice('cuda:5', w(3), gpus(8))).toBe('cuda:5');
    expect(rankDevice('cpu', w(3), gpus(8))).toBe('cpu');
    expect(rankDevice('cuda', w(3, 1), gpus(8))).toBe('cuda'); // one process
    expect(rankDevice('cuda', w(null), gpus(8))).toBe('cuda'); // no local rank known
    expect(() => rankDevice('cuda', w(4), gpus(4))).toThrow('rargen: this is local rank 4 but only 4 GPUs are visible (cuda:0..cuda:3); start at most one rank per GPU');
  });
});

describe('NCCL (GPU ranks; compiled, not run: only the library probe runs here)', () => {
  const hasProbe = typeof (native() as unknown as { distNcclProbe?: unknown }).distNcclProbe === 'function';
  it.skipIf(!hasProbe)('a missing libnccl says how to install it; a library that is not NCCL is named', () => {
    const saved = process.env.RARGEN_NCCL_LIB;
    try {
      process.env.RARGEN_NCCL_LIB = '/nonexistent/libnccl.so.2';
      expect(() => ncclProbe()).toThrow(/cannot load NCCL \(libnccl\.so\.2\), which GPU ranks use for the gradient all-reduce:\n {2}\/nonexistent\/libnccl\.so\.2: [^\n]+\ninstall NCCL 2\.10 or newer \(Debian\/Ubuntu with NVIDIA's CUDA repository: `apt-get install libnccl2`;[\s\S]*RARGEN_DIST_BACKEND=mpi/);
      process.env.RARGEN_NCCL_LIB = 'libc.so.6';
      expect(() => ncclProbe()).toThrow(/the NCCL library has no symbol ncclGetVersion \(is it NCCL 2\?\); install NCCL/);
    } finally {
      if (saved === undefined) delete process.env.RARGEN_NCCL_LIB;
      else process.env.RARGEN_NCCL_LIB = saved;
    }
  });
});

describe('without Open MPI', () => {
  const hasDist = typeof (native() as unknown as { distInit?: unknown }).distInit === 'function';
  const launched = { OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_RANK: '0' };
  it.skipIf(!hasDist)('a missing MPI library says how to install Open MPI; outside mpirun distInit refuses', () => {
    const saved = { lib: process.env.RARGEN_MPI_LIB, size: process.env.OMPI_COMM_WORLD_SIZE };
    const restore = (k: string, v: string | undefined) => (v === undefined ? delete process.env[k] : (process.env[k] = v));
    try {
      delete process.env.OMPI_COMM_WORLD_SIZE;
      if (!process.env.PMIX_RANK && !process.env.PMI_SIZE)
        expect(() => (native() as unknown as { distInit: () => unknown }).distInit()).toThrow(/was not started by mpirun[\s\S]*mpirun -np N rargen train/);
      process.env.OMPI_COMM_WORLD_SIZE = '2'; // what the addon checks; the library is not found, so MPI is never initialised
      process.env.RARGEN_MPI_LIB = '/nonexistent/libmpi.so.40';
      expect(() => Dist.fromEnv(launched)).toThrow(/cannot load the MPI library[\s\S]*apt-get install openmpi-bin libopenmpi-dev[\s\S]*mpirun -np N rargen train/);
      // a library that is not Open MPI (MPICH's integer handles are not supported) is refused by name
      process.env.RARGEN_MPI_LIB = 'libc.so.6';
      expect(() => Dist.fromEnv(launched)).toThrow(/is not Open MPI \(no ompi_mpi_comm_world symbol; MPICH/);
    } finally {
      restore('RARGEN_MPI_LIB', saved.lib);
      restore('OMPI_COMM_WORLD_SIZE', saved.size);
    }
  });
});
