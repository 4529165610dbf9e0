/**
 * A request handler for backpressure tests: it reads the request body slowly (every 16th chunk it
 * pauses for `pauseMs`) and answers `<bytes> <sha256 hex>` of what arrived; a request without a
 * body gets `bodiless`.
 */
import { createHash } from 'node:crypto';
import type { H1Request, H1Response } from '../../../../src/http/h1-server';

export function hashBodySlowly(pauseMs: number, bodiless: (req: H1Request, res: H1Response) => void): (req: H1Request, res: H1Response) => void {
  return (req, res) => {
    const body = req.body;
    if (!body) {
      bodiless(req, res);
      return;
    }
    const hash = createHash('sha256');
    let bytes = 0;
    let chunks = 0;
    body.on('data', (d: Buffer) => {
      hash.update(d);
      bytes += d.length;
      if (++chunks % 16 === 0) {
        body.pause();
        setTimeout(() => body.resume(), pauseMs);
      }
    });
    body.on('end', () => {
      const text = `${bytes} ${hash.digest('hex')}`;
      res.writeHead(200, { 'content-length': String(text.length) }).end(text);
    });
  };
}
