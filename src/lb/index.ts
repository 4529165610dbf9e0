import { registerPicker } from './registry';
import { leastRequest } from './least-request';
import { random } from './random';
import { ringHash } from './ring-hash';
import { roundRobin } from './round-robin';

registerPicker('round-robin', roundRobin);
registerPicker('least-request', leastRequest);
registerPicker('random', random);
registerPicker('ring-hash', ringHash);

export { buildPicker } from './registry';
export { ActiveRequests, endpointKey, noStats } from './stats';
export { cumulativeWeights, weightedIndex } from './random';
export type { Picker, EndpointStats } from './picker';
