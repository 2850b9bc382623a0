// The demo: a procedurally generated dataset of 16x16 palette pictures in ten
// classes, and the small RAR model trained on it that ships in demo/.
export * from './shapes.js';
