/**
 * Join tokens: the bootstrap credential of a sidecar outside Kubernetes. `meshlet token create
 * --service catalog --ttl 1h` makes one; the sidecar presents it on the push stream
 * (`--join-token`, MESHLET_JOIN_TOKEN or a file), and the control plane then signs certificates
 * for `spiffe://TD/svc/catalog` only, and registers endpoints for `catalog` only.
 *
 * A token is `mlj_ID.SECRET`: ID (8 hex) names it in lists and revocations; SECRET (32 random
 * bytes, base64url) is stored only as its SHA-256, in DATA_DIR/tokens.json (mode 0600). A token
 * binds one service, expires (default 1 h), can
 * be revoked, and may be used until then by every instance of its service (a reconnect presents
 * it again).
 *
 * The CLI and a running control plane share the file: writes are atomic (rename), and the
 * control plane re-reads it whenever its mtime or size changed, so a token created or revoked
 * by the CLI counts at the next connection. With the etcd store the records are one etcd key
 * (secrets.ts) shared by every replica: a token made through one replica verifies on all.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import * as path from 'node:path';
import { systemClock, type Clock } from '../src/core/clock';
import { splitJoinToken, withCaPin } from '../src/security/ca-pin';
import { SecurityError } from '../src/security/errors';
import { FileSecret, type SecretDoc } from './secrets';

export const TOKENS_FILE = 'tokens.json';
export const JOIN_PREFIX = 'mlj_';
export const DEFAULT_JOIN_TTL_MS = 3600_000;
/** API tokens (`meshlet token create --role`): bearer credentials for the REST API. */
export const API_PREFIX = 'mla_';
export const DEFAULT_API_TTL_MS = 90 * 86_400_000;
export const API_ROLES = ['view', 'edit', 'admin'] as const;
export type ApiRole = (typeof API_ROLES)[number];

export interface TokenRecord {
  id: string;
  /** join: a sidecar's bootstrap credential (binds `service`); api: a REST API credential (binds `role`). */
  kind: 'join' | 'api';
  /** For join tokens. */
  service?: string;
  /** For API tokens. */
  role?: ApiRole;
  /** SHA-256 of the secret, hex. */
  sha256: string;
  createdAt: string;
  expiresAt: string;
  revokedAt?: string;
  description?: string;
}

/** What a list shows: never the hash. */
export type TokenInfo = Omit<TokenRecord, 'sha256'> & { state: 'active' | 'expired' | 'revoked' };

const SERVICE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export class TokenStore {
  private readonly doc: SecretDoc;
  private readonly clock: Clock;
  private records: TokenRecord[] = [];
  private seen: string | undefined;
  /** When an unknown id last made the records be read again (clock ms). */
  private lastForced = -Infinity;
  private readonly caPin: () => string | undefined;

  /**
   * `where`: the data dir (DATA_DIR/tokens.json), or a SecretDoc (etcd). `caPin`: the hash of the
   * CA that signs the push port's certificate (src/security/ca-pin.ts), appended to every join
   * token made, so that the token is all a new sidecar needs.
   */
  constructor(where: string | SecretDoc, clock: Clock = systemClock, caPin: () => string | undefined = () => undefined) {
    this.doc = typeof where === 'string' ? new FileSecret(path.join(where, TOKENS_FILE)) : where;
    this.clock = clock;
    this.caPin = caPin;
  }

  /**
   * Creates a join token for `service`, or with `role` an API token; returns the token (shown
   * once) and its record.
   */
  async create(opts: { service?: string; role?: ApiRole; ttlMs?: number; description?: string }): Promise<{ token: string; info: TokenInfo }> {
    if (opts.role !== undefined) {
      if (opts.service !== undefined) throw new SecurityError('CREDENTIAL_INVALID', '--service (a join token) and --role (an API token) do not go together');
      if (!API_ROLES.includes(opts.role)) throw new SecurityError('CREDENTIAL_INVALID', `--role must be one of ${API_ROLES.join(', ')}, got ${JSON.stringify(opts.role)}`);
    } else if (opts.service === undefined || !SERVICE.test(opts.service))
      throw new SecurityError('CREDENTIAL_INVALID', `--service: ${JSON.stringify(opts.service)} is not a service name (lowercase letters, digits and '-', at most 63)`);
    const ttl = opts.ttlMs ?? (opts.role ? DEFAULT_API_TTL_MS : DEFAULT_JOIN_TTL_MS);
    if (!(ttl > 0)) throw new SecurityError('CREDENTIAL_INVALID', '--ttl must be positive');
    const id = randomBytes(4).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const now = this.clock.now();
    const rec: TokenRecord = {
      id,
      ...(opts.role ? { kind: 'api' as const, role: opts.role } : { kind: 'join' as const, service: opts.service }),
      sha256: sha256(secret),
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + ttl).toISOString(),
      ...(opts.description ? { description: opts.description } : {}),
    };
    await this.change(() => {
      this.records = [...this.prune(), rec];
      return true;
    });
    const token = opts.role ? `${API_PREFIX}${id}.${secret}` : withCaPin(`${JOIN_PREFIX}${id}.${secret}`, this.caPin());
    return { token, info: this.info(rec) };
  }

  /** Revokes by id; false when there is no such token. */
  async revoke(id: string): Promise<boolean> {
    let found = false;
    await this.change(() => {
      const rec = this.records.find((r) => r.id === id);
      found = !!rec;
      if (!rec || rec.revokedAt) return false;
      rec.revokedAt = new Date(this.clock.now()).toISOString();
      return true;
    });
    return found;
  }

  /** Reads the records, applies `fn` (true: it changed them) and writes them back; again from a fresh read when another writer got there first. */
  private async change(fn: () => boolean): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      await this.reload(true);
      if (!fn()) return;
      const written = await this.doc.write(JSON.stringify({ tokens: this.records }, null, 2) + '\n', this.seen);
      if (written !== undefined) {
        this.seen = written;
        return;
      }
      if (attempt >= 10) throw new SecurityError('CREDENTIAL_INVALID', `the tokens in ${this.doc.where} kept changing under this write; try again`);
    }
  }

  async list(): Promise<TokenInfo[]> {
    await this.reload();
    return this.records.map((r) => this.info(r));
  }

  /**
   * The service a join token proves. Throws a SecurityError: CREDENTIAL_INVALID (not a token,
   * unknown, wrong secret), CREDENTIAL_EXPIRED, CREDENTIAL_REVOKED. The messages name the token's
   * id only, never its secret.
   */
  async verify(token: string): Promise<{ id: string; service: string; expiresAt: number }> {
    const rec = await this.check(splitJoinToken(token).credential, 'join');
    return { id: rec.id, service: rec.service ?? '', expiresAt: Date.parse(rec.expiresAt) };
  }

  /** The role an API token grants; throws as `verify` does. */
  async verifyApi(token: string): Promise<{ id: string; role: ApiRole; expiresAt: number }> {
    const rec = await this.check(token, 'api');
    return { id: rec.id, role: rec.role ?? 'view', expiresAt: Date.parse(rec.expiresAt) };
  }

  private async check(token: string, kind: 'join' | 'api'): Promise<TokenRecord> {
    const what = kind === 'join' ? 'join token' : 'API token';
    const prefix = kind === 'join' ? JOIN_PREFIX : API_PREFIX;
    const m = new RegExp(`^${prefix}([0-9a-f]{8})\\.([A-Za-z0-9_-]{43})$`).exec(token.trim());
    if (!m) throw new SecurityError('CREDENTIAL_INVALID', `not a meshlet ${what} (expected ${prefix}ID.SECRET, from \`meshlet token create\`)`);
    await this.reload();
    const [, id, secret] = m as unknown as [string, string, string];
    let rec = this.records.find((r) => r.id === id && (r.kind ?? 'join') === kind);
    if (!rec) {
      // Made through another replica a moment ago (the version check is cached ~1 s): read the
      // document itself, at most every 200 ms, so a flood of unknown ids costs etcd little. If
      // etcd cannot answer, the records read last stand.
      const now = this.clock.now();
      if (now - this.lastForced >= 200) {
        this.lastForced = now;
        await this.reload(true).catch(() => undefined);
        rec = this.records.find((r) => r.id === id && (r.kind ?? 'join') === kind);
      }
    }
    const given = Buffer.from(sha256(secret), 'hex');
    // Compared in constant time even for an unknown id, so timing tells nothing about which ids exist.
    const want = Buffer.from(rec?.sha256 ?? '0'.repeat(64), 'hex');
    if (!timingSafeEqual(given, want) || !rec) throw new SecurityError('CREDENTIAL_INVALID', `${what} ${id} is not known to this control plane`);
    if (rec.revokedAt) throw new SecurityError('CREDENTIAL_REVOKED', `${what} ${id} was revoked at ${rec.revokedAt}`);
    if (this.clock.now() >= Date.parse(rec.expiresAt))
      throw new SecurityError('CREDENTIAL_EXPIRED', `${what} ${id} expired at ${rec.expiresAt}; create a new one with \`meshlet token create ${kind === 'join' ? `--service ${rec.service}` : `--role ${rec.role}`}\``);
    return rec;
  }

  private info(r: TokenRecord): TokenInfo {
    const { sha256: _h, ...rest } = r;
    const state = r.revokedAt ? 'revoked' : this.clock.now() >= Date.parse(r.expiresAt) ? 'expired' : 'active';
    return { ...rest, state };
  }

  /** Tokens expired or revoked for more than a day are forgotten. */
  private prune(): TokenRecord[] {
    const cutoff = this.clock.now() - 86_400_000;
    return this.records.filter((r) => Date.parse(r.expiresAt) > cutoff && (!r.revokedAt || Date.parse(r.revokedAt) > cutoff));
  }

  /** Re-reads the records if they changed (`force`: read whatever the cache says). */
  private async reload(force = false): Promise<void> {
    const v = force ? undefined : await this.doc.version();
    if (!force && v === this.seen && (v !== undefined || this.records.length === 0)) return;
    const cur = await this.doc.read();
    if (!cur) {
      this.records = [];
      this.seen = undefined;
      return;
    }
    let parsed: { tokens?: TokenRecord[] };
    try {
      parsed = JSON.parse(cur.text);
    } catch (err) {
      throw new Error(`${this.doc.where}: not JSON (${(err as Error).message}); fix or remove it`);
    }
    this.records = Array.isArray(parsed.tokens) ? parsed.tokens.filter((r) => r && typeof r.id === 'string' && typeof r.sha256 === 'string') : [];
    this.seen = cur.version;
  }
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}
