/**
 * Request-target parsing (RFC 9112 §3.2): origin-form `/a?b`, absolute-form
 * `http://host:port/a?b` (what HTTP_PROXY clients send), and asterisk-form `*`.
 */

export interface RequestTarget {
  /** Path without the query; `*` for asterisk-form. */
  path: string;
  /** Query without `?`, '' when absent. */
  query: string;
  /** From absolute-form only: the URI's authority, lower-cased. It overrides Host. */
  authority?: string;
}

/** Parses a request-target; undefined when it is not one this proxy accepts. */
export function parseRequestTarget(target: string): RequestTarget | undefined {
  if (target.length === 0) return undefined;
  const c = target.charCodeAt(0);
  if (c === 47 /* / */) return splitPathQuery(target);
  if (target === '*') return { path: '*', query: '' };
  // absolute-form: only plain http; https goes through CONNECT, which is not served here.
  if (target.length > 7 && target.slice(0, 7).toLowerCase() === 'http://') {
    const rest = target.slice(7);
    let end = rest.length;
    for (let i = 0; i < rest.length; i++) {
      const ch = rest.charCodeAt(i);
      if (ch === 47 || ch === 63 || ch === 35) {
        end = i;
        break;
      }
    }
    const authority = rest.slice(0, end).toLowerCase();
    if (authority.length === 0 || authority.includes('@')) return undefined;
    let pathAndQuery = rest.slice(end);
    const hash = pathAndQuery.indexOf('#');
    if (hash >= 0) pathAndQuery = pathAndQuery.slice(0, hash);
    if (pathAndQuery.length === 0) pathAndQuery = '/';
    else if (pathAndQuery.charCodeAt(0) === 63) pathAndQuery = '/' + pathAndQuery;
    return { ...splitPathQuery(pathAndQuery), authority };
  }
  return undefined;
}

function splitPathQuery(s: string): RequestTarget {
  const q = s.indexOf('?');
  return q < 0 ? { path: s, query: '' } : { path: s.slice(0, q), query: s.slice(q + 1) };
}
