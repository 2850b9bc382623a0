// The sampling locks (lib/sample.ts acquireLock): a lock is taken over when its owner
// cannot be running (issue 12: a container restarted as PID 1 found its own old lock,
// "alive" because the pid was its own, and never resumed), and refused while it can.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { acquireLock, lockOwnerAlive, removeStaleTemps, SampleLockedError } from '../../lib/sample.js';
import { AtomicFile } from '../../lib/io/file.js';
import { tempDir } from '../helpers/tmp.js';

const dir = tempDir('sample-lock');
let n = 0;
const lockFile = (owner: object): string => {
  const p = join(dir, `l${n++}.lock`);
  writeFileSync(p, JSON.stringify(owner) + '\n');
  return p;
};
const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
const startOf = (pid: number): string => {
  const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return st.slice(st.lastIndexOf(')') + 2).split(' ')[19]!;
};

describe.runIf(process.platform === 'linux')('sample locks', () => {
  it('a lock naming our own pid that this process does not hold is stale (a restarted PID 1)', async () => {
    const p = lockFile({ pid: process.pid, host: hostname(), bootId: boot, processStart: '1' });
    const release = await acquireLock(p, 'shard 0/1');
    const mine = JSON.parse(readFileSync(p, 'utf8'));
    expect(mine).toMatchObject({ pid: process.pid, host: hostname(), bootId: boot, processStart: startOf(process.pid) });
    // held by us now: a second acquisition in this process is refused
    await expect(acquireLock(p, 'shard 0/1')).rejects.toThrow(SampleLockedError);
    await release();
    const again = await acquireLock(p, 'shard 0/1');
    await again();
  });

  it('a live process keeps its lock; the same pid with another start time or boot id does not', async () => {
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      const pid = child.pid!;
      await new Promise((r) => setTimeout(r, 100));
      const live = { pid, host: hostname(), bootId: boot, processStart: startOf(pid) };
      expect(lockOwnerAlive(live, 'x')).toBe(true);
      const p = lockFile(live);
      await expect(acquireLock(p, 'shard 1/2')).rejects.toThrow(`shard 1/2 is already running (pid ${pid} on ${hostname()}); if no such process runs, delete ${p}`);
      expect(lockOwnerAlive({ ...live, processStart: String(Number(live.processStart) + 1) }, 'x')).toBe(false); // pid reused
      expect(lockOwnerAlive({ ...live, bootId: 'another-boot' }, 'x')).toBe(false); // written before a reboot
      expect(lockOwnerAlive({ pid, host: hostname() }, 'x')).toBe(true); // an old-format lock: the pid alone decides
      expect(lockOwnerAlive({ ...live, host: 'elsewhere' }, 'x')).toBe(true); // another host: cannot tell, keep it
      (await acquireLock(lockFile({ ...live, bootId: 'another-boot' }), 'shard 1/2'))();
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('a lock of a process that is gone is taken over', async () => {
    const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
    await new Promise((r) => child.on('exit', r));
    const p = lockFile({ pid: child.pid, host: hostname(), bootId: boot, processStart: '5' });
    expect(lockOwnerAlive(JSON.parse(readFileSync(p, 'utf8')), p)).toBe(false);
    await (await acquireLock(p, 'merge'))();
  });

  it("temp files named with our pid that this process does not have open are a previous process's, and removed", async () => {
    const d = join(dir, 'temps');
    mkdirSync(d);
    writeFileSync(join(d, `.000001.png.tmp-${process.pid}-old`), 'half');
    const live = await AtomicFile.create(join(d, '000002.png'));
    try {
      await removeStaleTemps(d);
      expect(readdirSync(d)).toEqual([live.tempPath.slice(d.length + 1)]);
    } finally {
      await live.abort();
    }
  });
});
