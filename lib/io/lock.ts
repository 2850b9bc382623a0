// The pid lock: one running process per lock file (a sampling shard, a merge). The file
// holds its owner (pid, host, boot id, process start time), so that a lock left by a
// process that no longer runs is taken over instead of blocking forever: after a crash,
// a reboot, a pid reused by another process, or a restarted container whose process is
// PID 1 again.
import { readFileSync } from 'node:fs';
import { open, readFile, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { LockedError } from '../errors.js';

/** Whether a process with this pid runs (one we may not signal counts as running). */
export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Locks this process holds now (absolute paths): a lock naming our own pid is ours only if listed here. */
const heldLocks = new Set<string>();

/** The kernel's boot id (Linux), or undefined. */
function bootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** A process's start time in clock ticks since boot (/proc/PID/stat field 22, Linux), or undefined. */
function processStart(pid: number): string | undefined {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** What a lock file holds. */
export interface LockOwner {
  pid?: number;
  host?: string;
  bootId?: string;
  /** processStart(pid) when the lock was taken. */
  processStart?: string;
  startedAt?: string;
}

/**
 * Whether the process that wrote a lock may still run. A lock from another host counts
 * as alive (nothing here can tell). On this host it is stale when it was written under
 * another boot, when its pid is ours but this process does not hold it (a restarted
 * container runs as PID 1 again), when no process has its pid, or when the process with
 * that pid started at another time (the pid was reused).
 */
export function lockOwnerAlive(owner: LockOwner, path: string): boolean {
  if (typeof owner.pid !== 'number') return false;
  if (owner.host !== hostname()) return true;
  const boot = bootId();
  if (owner.bootId && boot && owner.bootId !== boot) return false;
  if (owner.pid === process.pid) return heldLocks.has(resolve(path));
  if (!pidAlive(owner.pid)) return false;
  const start = processStart(owner.pid);
  if (owner.processStart && start && owner.processStart !== start) return false;
  return true;
}

/**
 * Creates `path` exclusively (taking over the lock of a process that no longer runs, see
 * lockOwnerAlive); resolves to its release. While a live process holds it, rejects with
 * `Locked` (default LockedError) saying "<what> is already running (pid P on HOST)".
 */
export async function acquireLock(path: string, what: string, Locked: new (message: string) => LockedError = LockedError): Promise<() => Promise<void>> {
  const me: LockOwner = { pid: process.pid, host: hostname(), bootId: bootId(), processStart: processStart(process.pid), startedAt: new Date().toISOString() };
  const abs = resolve(path);
  for (let attempt = 0; ; attempt++) {
    try {
      const fh = await open(path, 'wx');
      try {
        await fh.writeFile(JSON.stringify(me) + '\n');
      } finally {
        await fh.close();
      }
      heldLocks.add(abs);
      return async () => {
        heldLocks.delete(abs);
        await unlink(path).catch(() => undefined);
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
      let owner: LockOwner = {};
      try {
        owner = JSON.parse(await readFile(path, 'utf8'));
      } catch {
        /* a lock being written, or garbage: treated as stale below */
      }
      if (lockOwnerAlive(owner, path)) throw new Locked(`${what} is already running (pid ${owner.pid} on ${owner.host}); if no such process runs, delete ${path}`);
      await unlink(path).catch(() => undefined);
    }
  }
}
