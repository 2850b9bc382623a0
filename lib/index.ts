// Public API of rargen (placeholder until the generate/config modules land).
export { native } from './native.js';
export type { BuildInfo, CudaStatus, CudaDevice } from './native.js';
