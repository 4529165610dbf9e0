/** Typed, coded errors of the identity layer: CSR checks, credentials, peer verification. */
export type SecurityErrorCode =
  | 'CSR_TOO_LARGE'
  | 'CSR_MALFORMED'
  | 'CSR_BAD_SIGNATURE'
  | 'CSR_KEY_TYPE'
  | 'CSR_NO_IDENTITY'
  | 'CSR_WRONG_IDENTITY'
  | 'CA_INVALID'
  | 'CREDENTIAL_MISSING'
  | 'CREDENTIAL_INVALID'
  | 'CREDENTIAL_EXPIRED'
  | 'CREDENTIAL_REVOKED'
  | 'CREDENTIAL_WRONG_SERVICE'
  | 'PEER_UNVERIFIED'
  | 'PEER_WRONG_IDENTITY';

export class SecurityError extends Error {
  readonly code: SecurityErrorCode;
  constructor(code: SecurityErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SecurityError';
    this.code = code;
  }
}
