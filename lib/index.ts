/// <reference types="node" preserve="true" />
// rargen's public API. Typical use:
//
//   import { loadGenerator, loadTokenizer, generate, savePng } from 'rargen';
//   const generator = await loadGenerator('rar_b.bin');            // preset inferred: rar-b
//   const tokenizer = await loadTokenizer('maskgit-vqgan-imagenet-f16-256.bin');
//   const { images } = await generate({ generator, tokenizer, classLabels: [207, 360], seed: 42 });
//   await savePng('out/000000.png', images![0]!);
//   generator.dispose(); tokenizer.dispose();

export {
  loadGenerator,
  loadTokenizer,
  generate,
  decode,
  encode,
  Generator,
  Tokenizer,
  ValidationError,
  type LoadGeneratorOptions,
  type LoadTokenizerOptions,
  type LoadProgress,
  type GenerateOptions,
  type GenerateProgress,
  type GenerateResult,
  type BatchOptions,
  type TokenBatch,
  type Precision,
} from './generate.js';

export {
  PRESETS,
  PRESET_NAMES,
  MASKGIT_VQGAN,
  NEUTRAL_SAMPLING,
  inferGeneratorConfig,
  inferTokenizerConfig,
  validateGeneratorWeights,
  validateTokenizerWeights,
  validateInceptionWeights,
  expectedGeneratorTensors,
  expectedTokenizerTensors,
  expectedInceptionTensors,
  detectModelKind,
  matchPreset,
  resolvePreset,
  tokenGridSize,
  ConfigError,
  WeightsMismatchError,
  type GeneratorConfig,
  type TokenizerConfig,
  type SamplingDefaults,
  type Preset,
  type PresetName,
  type ModelKind,
  generatorParamTable,
  tokenizerParamTable,
  inceptionParamTable,
  positionRows,
  type ParamSpec,
} from './config.js';

export { DecodeSession, SessionFullError, type SequenceSpec, type SessionStep, type DecodeSessionOptions } from './session.js';

export { resolveDevice, DeviceError, type DeviceSpec, type ResolvedDevice } from './device.js';

export {
  savePng,
  imageGrid,
  encodePng,
  decodePng,
  decodeImage,
  loadImage,
  centerCropArr,
  resize,
  flipHorizontal,
  decoderOutputToImages,
  imagesToPixels,
  type RgbImage,
  type ResampleFilter,
} from './image.js';

export { openCheckpoint, saveTorch, saveSafetensors, readNpz, writeNpz } from './io/index.js';
export type { Checkpoint, TensorInfo, HostTensor, DType } from './tensor.js';

export { native } from './native.js';
export type { BuildInfo, CudaStatus, CudaDevice } from './native.js';

// FID evaluation (ADM evaluator: FID, sFID, IS, precision, recall) and sample sets.
export {
  evaluateNpz,
  FeatureStatistics,
  frechetDistance,
  inceptionScore,
  precisionRecall,
  ImageNpz,
  type EvaluateOptions,
  type EvaluateResult,
  type EvaluateProgress,
} from './fid.js';
export { loadInception, findInceptionWeights, cacheDir, InceptionV3, MissingWeightsError } from './inception.js';
export { sampleImageNet, mergeSamples, type SampleImageNetOptions, type SampleResult, type MergeSamplesOptions } from './sample.js';

// Training (the official rar.yaml layout, AdamW, schedules, exact resume).
export { runTraining, type TrainRunOptions, type TrainRunResult } from './train/loop.js';
export { loadTrainConfig, buildTrainConfig, type LoadedTrainConfig } from './train/config.js';
export { TokenDataset } from './train/data.js';
export { Trainer } from './train/native.js';
export { saveCheckpoint, loadCheckpoint, latestCheckpoint } from './train/checkpoint.js';

// Class names (ImageNet-1k, index order) and name resolution.
export { IMAGENET_CLASSES, className, classSynonyms, resolveClassName, searchClasses } from './classes.js';

// The released files and the resumable downloader into the cache folder.
export { RELEASED_FILES, findReleasedFile, cachedPath, resolveModelPath, mirroredUrl, type ReleasedFile, type ReleasedKind } from './releases.js';
export { downloadFile, downloadReleased, checkReleasedFile, type DownloadFileOptions, type DownloadProgress } from './download.js';

// Every error class rargen throws; each has a stable `code` (RARGEN_*).
export { ClassNameError, DownloadError, NotDownloadedError } from './errors.js';
export { TrainConfigError } from './train/config.js';
export { CheckpointError } from './train/checkpoint.js';
export { DataError } from './train/data.js';
export { ImageDecodeError } from './image.js';
export { SampleLockedError, SamplesIncompleteError } from './sample.js';
export { RargenIOError } from './io/errors.js';
export { PickleTruncatedError } from './io/pickle.js';
