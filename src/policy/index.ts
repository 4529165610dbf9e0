export * from './types';
export * from './compiled';
export { parseDocuments, parseAll, toWire } from './parse';
export { parseSnapshot } from './snapshot';
