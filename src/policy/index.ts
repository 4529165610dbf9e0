export * from './types';
export * from './compiled';
export { parseResource, parseDocuments, parseEach, parseAll, validateReferences, toWire, resourceKey, kindFromName, KIND_ALIASES, describeRaw } from './parse';
export { parseSnapshot } from './snapshot';
export { parseDuration, formatDuration } from './validate';
