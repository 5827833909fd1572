// Types of roomcast.js (and roomcast.cjs): the JavaScript client of
// roomcast. The wire protocol is docs/protocol.md; the API, README.md.

/** Where a client is in a room with history. */
export interface Position {
  offset: number;
  epoch: string;
}

/** The options of `new Roomcast(url, options)`. */
export interface RoomcastOptions {
  /** A JWT, or a function called before every connection attempt to fetch a fresh one. */
  token?: string | (() => string | Promise<string>);
  /** A WebSocket constructor (default: `globalThis.WebSocket`; Node 20 has none: pass the `ws` package's). */
  WebSocket?: new (url: string) => WebSocket | object;
  /** The server's `--heartbeat-secs` (default 30). */
  heartbeatSecs?: number;
  /** First reconnection delay bound, ms (default 500). */
  backoffBaseMs?: number;
  /** Largest reconnection delay bound, ms (default 30 000). */
  backoffCapMs?: number;
  /** Consecutive failed attempts before giving up (default Infinity). */
  maxReconnectAttempts?: number;
  /** Publishes and sends held while offline (default 100). */
  maxQueue?: number;
}

/** A message of a room. */
export interface RoomMessage {
  room: string;
  from?: string;
  data: unknown;
  /** In a room with history. */
  offset?: number;
  /** A binary publish: `data` is its bytes. */
  binary?: true;
}

/** The payloads of the events `on()` listens to. */
export interface RoomcastEvents {
  open: { user: string; conn: number; reconnected: boolean };
  message: RoomMessage;
  direct: { from: string; data: unknown };
  close: { code: number; reason: string; willReconnect: boolean; delayMs?: number; attempt?: number };
  error: RoomcastError;
  unsubscribed: { room: string; reason: string };
  recovered: { room: string; offset: number };
  gap: { room: string; offset: number; epoch: string; since: Position };
  joined: { room: string; user: string };
  left: { room: string; user: string };
}

/** A room's recent messages (`history()`). */
export interface History {
  room: string;
  epoch: string;
  offset: number;
  messages: { offset: number; from: string; data: unknown }[];
}

/** Who is in a room (`presence()`). */
export interface Presence {
  room: string;
  count: number;
  users?: { user: string; conns: number }[];
  truncated?: true;
}

/** An error with a machine-readable `code`: the server's (`invalid_room`,
 * `forbidden`, `unavailable`, ...) or the client's own (`queue_full`,
 * `disconnected`, `closed`, `cancelled`, `bad_data`, `token`, `unauthorized`). */
export class RoomcastError extends Error {
  constructor(code: string, message: string);
  readonly code: string;
}

/** A roomcast connection that reconnects by itself. */
export class Roomcast {
  constructor(url: string, options?: RoomcastOptions);
  /** The user the server says this client is (from the welcome), or null. */
  readonly user: string | null;
  /** This connection's number on its node (the welcome's `conn`), or null. */
  readonly connId: number | null;
  readonly state: 'connecting' | 'open' | 'reconnecting' | 'closed';
  /** The rooms joined (re-joined after every reconnection). */
  readonly rooms: string[];
  on<E extends keyof RoomcastEvents>(event: E, fn: (payload: RoomcastEvents[E]) => void): () => void;
  off<E extends keyof RoomcastEvents>(event: E, fn: (payload: RoomcastEvents[E]) => void): void;
  /** Resolves with the position in a room with history. */
  join(room: string): Promise<Position | undefined>;
  leave(room: string): Promise<void>;
  /** Resolves with the offset in a room with history. */
  publish(room: string, data: unknown): Promise<{ offset: number } | undefined>;
  send(user: string, data: unknown): Promise<void>;
  history(room: string, options?: { limit?: number; since?: Position }): Promise<History>;
  presence(room: string, options?: { list?: boolean }): Promise<Presence>;
  position(room: string): Position | undefined;
  close(code?: number, reason?: string): void;
}

/** Full-jitter backoff: a random delay below min(capMs, baseMs * 2^attempt). */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random?: () => number): number;
