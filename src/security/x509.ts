/**
 * @peculiar/x509, ready to use: its dependency injection (tsyringe) needs a Reflect polyfill
 * loaded first, and it signs and verifies through WebCrypto, which is Node's own
 * (`crypto.webcrypto`). Import x509 from here, never from the package directly.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
export const subtle = webcrypto.subtle;
