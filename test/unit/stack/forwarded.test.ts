import t from 'tap';
import { trimForwarded } from '../../../src/stack/forwarded';

// The front has appended the peer's address (here 10.0.0.9) to whatever the client sent.
const cases: { name: string; hops: number; in: string[]; out: string[]; client: string | undefined }[] = [
  { name: 'no client header: the peer', hops: 0, in: ['x-forwarded-for', '10.0.0.9'], out: ['x-forwarded-for', '10.0.0.9'], client: '10.0.0.9' },
  { name: '0 hops: a forged chain is replaced', hops: 0, in: ['x-forwarded-for', '1.1.1.1, 2.2.2.2, 10.0.0.9'], out: ['x-forwarded-for', '10.0.0.9'], client: '10.0.0.9' },
  { name: '1 hop: the load balancer\u2019s entry is the client', hops: 1, in: ['x-forwarded-for', '1.1.1.1, 203.0.113.7, 10.0.0.9'], out: ['x-forwarded-for', '203.0.113.7, 10.0.0.9'], client: '203.0.113.7' },
  { name: '2 hops', hops: 2, in: ['x-forwarded-for', '1.1.1.1,203.0.113.7 ,10.1.1.1, 10.0.0.9'], out: ['x-forwarded-for', '203.0.113.7, 10.1.1.1, 10.0.0.9'], client: '203.0.113.7' },
  { name: 'fewer entries than hops: the peer is the client', hops: 3, in: ['x-forwarded-for', '203.0.113.7, 10.0.0.9'], out: ['x-forwarded-for', '203.0.113.7, 10.0.0.9'], client: '10.0.0.9' },
  { name: '0 hops: Forwarded dropped', hops: 0, in: ['forwarded', 'for=1.1.1.1', 'x-forwarded-for', '10.0.0.9'], out: ['x-forwarded-for', '10.0.0.9'], client: '10.0.0.9' },
  { name: '1 hop: Forwarded trimmed', hops: 1, in: ['forwarded', 'for=1.1.1.1, for=203.0.113.7;proto=https', 'x-forwarded-for', '10.0.0.9'], out: ['forwarded', 'for=203.0.113.7;proto=https', 'x-forwarded-for', '10.0.0.9'], client: '10.0.0.9' },
];

for (const c of cases)
  t.test(c.name, async (t) => {
    const h = [...c.in];
    t.equal(trimForwarded(h, c.hops), c.client, 'client address');
    t.same(h, c.out, 'headers');
  });
