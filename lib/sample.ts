// Sampling the images for FID (MODEL.md, "Images for FID"): numPerClass images for
// each class (50 x classes 0..999 = 50,000 for the paper), written as PNGs and then
// as one .npz `arr_0` (num, R, R, 3) uint8 for ADM's evaluator.
//
//   await sampleImageNet({ generator, tokenizer, out: 'rar_b' });   // -> rar_b/images/*.png, rar_b.npz
//
// Built to be killed: a 50,000-image run takes an hour or more on a GPU, so
//  - image g (g = class position * numPerClass + j, class-major like the official
//    sample script) is a pure function of (seed, g): the native sampler draws image g's
//    randomness from (seed, g, step) whatever the batch, so any split into batches,
//    shards or restarts gives the same images;
//  - each PNG is written to a temp file, fsynced and renamed, so a file at its final
//    name is complete; after a batch's PNGs (and their folder) are synced, the shard's
//    progress manifest (which images are done, and the CRC-32 of their pixels) is
//    replaced atomically;
//  - a restart trusts the images its manifests list, checks any other PNG it finds
//    by decoding it (a crash can leave PNGs newer than the manifest), and generates
//    only the missing ones;
//  - the .npz is assembled only when every image exists, streamed from the PNGs in
//    index order (the CRCs are checked on the way) into a temp file that is renamed
//    to its final name at the end: an .npz at that name is always complete.
//
// Layout of a run (`out` = OUT):
//   OUT/run.json                    the settings; a restart with other settings is refused
//   OUT/images/000000.png ...       image g, R x R RGB
//   OUT/progress/shard-I-of-N.json  manifest of shard I/N (shard-0-of-1 unsharded)
//   OUT/progress/*.lock             one running process per shard, one merge at a time
//   OUT.npz                         arr_0 (num, R, R, 3) uint8 and labels (num,) int64
//
// Shards (one process per GPU, or per machine) take contiguous blocks of image
// indices; the last one to finish writes the .npz (or `rargen merge-samples OUT`,
//
// The code is split by concern under lib/sample/: plan.ts (settings, layout, shards,
// batches), resume.ts (run.json, manifests, locks: what is done), run.ts
// (sampleImageNet), merge.ts (mergeSamples). This file is the entry the rest imports.
export { sampleLayout, sampleImageName, parseShard, shardRange, sampleLabel, planBatches, type SampleSettings, type SampleLayout, type Shard } from './sample/plan.js';
export { readSampleSettings, acquireLock } from './sample/resume.js';
export { sampleImageNet, type SampleProgress, type SampleBatchInfo, type SampleImageNetOptions, type SampleResult } from './sample/run.js';
export { mergeSamples, type MergeSamplesOptions, type MergeSamplesResult } from './sample/merge.js';
export { lockOwnerAlive, type LockOwner } from './io/lock.js';
export { removeStaleTemps } from './io/file.js';
export { SampleLockedError, SamplesIncompleteError } from './errors.js';
