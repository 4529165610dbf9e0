/** The rule's header edits: request headers here, response headers by the front adapter. */
import type { Layer } from '../core/layer';
import { editFlat } from '../http/headers';
import type { HeaderEditor } from '../policy/compiled';

export function editsLayer(request: HeaderEditor | undefined, response: HeaderEditor | undefined): Layer {
  return (next) => (call, sink) => {
    if (request) call.headers = editFlat(call.headers, request);
    call.responseEdits = response;
    return next(call, sink);
  };
}
