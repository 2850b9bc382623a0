// Device resolution: on this machine (whatever it has) and on synthetic CUDA statuses.
import { describe, expect, it } from 'vitest';
import { resolveDevice, cudaUnavailableReason, DeviceError } from '../../lib/device.js';
import { native, type CudaStatus } from '../../lib/native.js';

const gpu = (index: number) => ({ index, name: `GPU${index}`, totalMemory: 80 * 2 ** 30, computeCapability: '9.0' });
const ok: CudaStatus = { built: true, available: true, reason: '', driverVersion: 12040, runtimeVersion: 12040, devices: [gpu(0), gpu(1)] };

describe('resolveDevice on this machine', () => {
  it('auto picks CUDA only when cudaStatus says it is usable, and says why', () => {
    const st = native().cudaStatus();
    const r = resolveDevice('auto');
    if (st.available && st.devices.length > 0) {
      expect(r.device).toBe('cuda:0');
      expect(r.reason).toMatch(/^using CUDA device 0: /);
    } else {
      expect(r).toEqual({ device: 'cpu', kind: 'cpu', reason: `using the CPU: ${cudaUnavailableReason(st)}` });
      expect(r.reason.length).toBeGreaterThan('using the CPU: '.length);
      expect(r.reason).not.toContain('\n');
      expect(() => resolveDevice('cuda')).toThrow(DeviceError);
      expect(() => resolveDevice('cuda')).toThrow(`cuda was requested but CUDA cannot be used: ${cudaUnavailableReason(st)}`);
    }
    expect(resolveDevice('cpu')).toEqual({ device: 'cpu', kind: 'cpu', reason: 'CPU requested' });
  });
});

describe('resolveDevice on synthetic statuses', () => {
  it('uses the first GPU for auto and cuda, the named one for cuda:N', () => {
    expect(resolveDevice('auto', ok)).toEqual({ device: 'cuda:0', kind: 'cuda', reason: 'using CUDA device 0: GPU0 (compute capability 9.0, 80.0 GiB)' });
    expect(resolveDevice('cuda', ok).device).toBe('cuda:0');
    expect(resolveDevice('cuda:1', ok).device).toBe('cuda:1');
    expect(() => resolveDevice('cuda:2', ok)).toThrow('cuda:2 was requested but only 2 CUDA devices found (cuda:0..cuda:1)');
  });

  it('explains each reason CUDA is unusable', () => {
    const cases: [CudaStatus, string][] = [
      [{ built: false, available: false, reason: '', devices: [] }, 'rargen was built without CUDA'],
      [{ built: true, available: false, reason: '', driverVersion: 0, runtimeVersion: 12040, devices: [] }, 'no NVIDIA driver found'],
      [
        { built: true, available: false, reason: '', driverVersion: 11080, runtimeVersion: 12040, devices: [gpu(0)] },
        'the NVIDIA driver is too old (supports CUDA 11.8, rargen was built with CUDA 12.4)',
      ],
      [{ built: true, available: false, reason: '', driverVersion: 12040, runtimeVersion: 12040, devices: [] }, 'no CUDA device found'],
      [{ built: true, available: false, reason: 'cudaGetDeviceCount: all CUDA-capable devices are busy', devices: [] }, 'cudaGetDeviceCount: all CUDA-capable devices are busy'],
    ];
    for (const [st, why] of cases) {
      expect(cudaUnavailableReason(st)).toBe(why);
      expect(resolveDevice('auto', st)).toEqual({ device: 'cpu', kind: 'cpu', reason: `using the CPU: ${why}` });
      expect(() => resolveDevice('cuda:0', st)).toThrow(`cuda:0 was requested but CUDA cannot be used: ${why}`);
    }
  });

  it('rejects malformed device strings', () => {
    expect(() => resolveDevice('gpu' as never, ok)).toThrow('Expected one of auto, cpu, cuda, cuda:N for device but received "gpu"');
    expect(() => resolveDevice('cuda:x' as never, ok)).toThrow(TypeError);
  });
});
