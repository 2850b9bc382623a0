// Device selection. 'auto' picks CUDA when the addon was built with it and a usable
// driver and GPU are present, else the CPU, and always says why in one line, so that
// a user who expected a GPU learns what is missing. An explicit 'cuda' request that
// cannot be met is an error carrying the same reason.
import { z } from 'zod';
import { native, type CudaStatus } from './native.js';

export type DeviceSpec = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;

export const DeviceSpecSchema = z
  .string()
  .regex(/^(auto|cpu|cuda|cuda:\d+)$/) as unknown as z.ZodType<DeviceSpec>;

export interface ResolvedDevice {
  /** The device string the native addon takes: 'cpu' or 'cuda:N'. */
  device: 'cpu' | `cuda:${number}`;
  kind: 'cpu' | 'cuda';
  /** One line: why this device (and, for auto on CPU, why not CUDA). */
  reason: string;
}

/** Thrown when an explicitly requested device cannot be used. */
export class DeviceError extends Error {
  override name = 'DeviceError';
  readonly code = 'RARGEN_DEVICE';
}

/** Why CUDA cannot be used, in one line, or undefined when it can. */
export function cudaUnavailableReason(status: CudaStatus): string | undefined {
  if (!status.built) return status.reason || 'rargen was built without CUDA';
  if (status.available && status.devices.length > 0) return undefined;
  if (status.reason) return status.reason;
  if (!status.driverVersion) return 'no NVIDIA driver found';
  if (status.runtimeVersion && status.driverVersion < status.runtimeVersion)
    return `the NVIDIA driver is too old (supports CUDA ${cudaVersion(status.driverVersion)}, rargen was built with CUDA ${cudaVersion(status.runtimeVersion)})`;
  if (status.devices.length === 0) return 'no CUDA device found';
  return 'CUDA is not usable';
}

function cudaVersion(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}

function describeGpu(status: CudaStatus, index: number): string {
  const d = status.devices[index];
  if (!d) return `CUDA device ${index}`;
  return `CUDA device ${index}: ${d.name} (compute capability ${d.computeCapability}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB)`;
}

/**
 * Resolves a device request. `status` defaults to the native addon's cudaStatus();
 * 'cpu' never needs the addon.
 */
export function resolveDevice(spec: DeviceSpec = 'auto', status?: CudaStatus): ResolvedDevice {
  const parsed = DeviceSpecSchema.safeParse(spec);
  if (!parsed.success) throw new TypeError(`Expected one of auto, cpu, cuda, cuda:N for device but received ${JSON.stringify(spec)}`);
  if (spec === 'cpu') return { device: 'cpu', kind: 'cpu', reason: 'CPU requested' };
  const st = status ?? native().cudaStatus();
  const why = cudaUnavailableReason(st);
  if (spec === 'auto') {
    if (why === undefined) return { device: 'cuda:0', kind: 'cuda', reason: `using ${describeGpu(st, 0)}` };
    return { device: 'cpu', kind: 'cpu', reason: `using the CPU: ${why}` };
  }
  if (why !== undefined) throw new DeviceError(`${spec} was requested but CUDA cannot be used: ${why}`);
  const index = spec === 'cuda' ? 0 : Number(spec.slice(5));
  if (index >= st.devices.length)
    throw new DeviceError(`${spec} was requested but only ${st.devices.length} CUDA device${st.devices.length === 1 ? '' : 's'} found (cuda:0..cuda:${st.devices.length - 1})`);
  return { device: `cuda:${index}`, kind: 'cuda', reason: `using ${describeGpu(st, index)}` };
}
