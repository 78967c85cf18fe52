/**
 * The mail queue's ledger: one status record per message (its state, its recipients' progress,
 * the last error), beside the queue elements that PersistedQueue keeps. Workers read it before
 * each attempt, so a retried message goes only to the recipients still pending, and write it
 * after, before the element is acknowledged. It also answers "how deep is the queue, and how
 * old is its oldest message" for the whole store, across processes.
 *
 * Every store (memory, Redis, SQL) implements `LedgerStore`; this module has the record's
 * schema and the in-memory one.
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as DateTime from "effect/DateTime"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"

/** Why an attempt failed, in a form every store can keep. */
export const DeliveryFailure = Schema.Struct({
  /**
   * `Refused`: the server replied 4xx or 5xx (`code`, `enhancedCode`); `Connection`: the
   * connection failed or timed out; `Protocol`: the server broke the protocol; `Client`: the
   * message cannot be sent as it is (an invalid address, an extension the server lacks);
   * `RateLimit`: the rate limit's store failed; `Expired`: older than the queue's `maxAge`;
   * `Defect`: a bug (logged).
   */
  kind: Schema.Literals(["Refused", "Connection", "Protocol", "Client", "RateLimit", "Expired", "Defect"]),
  /** `Refused`: the server's reply code. */
  code: Schema.optionalKey(Schema.Int),
  /** `Refused`: its enhanced code, "5.1.1", when it had one. */
  enhancedCode: Schema.optionalKey(Schema.String),
  /** The server's reply text, or what went wrong. */
  message: Schema.String
})
/** A failed attempt, decoded. */
export type DeliveryFailure = typeof DeliveryFailure.Type

/** One recipient of a queued message. */
export const RecipientStatus = Schema.Struct({
  /** The recipient's address. */
  address: Schema.String,
  /** `pending` until the server accepts it (`delivered`) or refuses it for good (`failed`). */
  state: Schema.Literals(["pending", "delivered", "failed"]),
  /** `delivered`: the server's reply text; `failed` (or `pending` after a 4xx): the refusal. */
  reply: Schema.optionalKey(Schema.String),
  /** Its last refusal, temporary or for good. */
  error: Schema.optionalKey(DeliveryFailure)
})
/** One recipient's progress, decoded. */
export type RecipientStatus = typeof RecipientStatus.Type

/** Where a message is; `MessageStatus` says what each state means. */
export const MessageState = Schema.Literals(["queued", "sending", "deferred", "delivered", "dead"])
/** `queued`, `sending`, `deferred`, `delivered` or `dead`. */
export type MessageState = typeof MessageState.Type

/** A state after which nothing more happens to the message. */
export const isFinal = (state: MessageState): boolean => state === "delivered" || state === "dead"

/**
 * Where a message is: `queued` (waiting for its first attempt), `sending`, `deferred` (a
 * temporary failure: `lastError`, and `nextAttemptAt`), `delivered` (every recipient
 * accepted it) or `dead` (some recipient refused it for good, or it expired: it is in the
 * dead-letter queue).
 */
export const MessageStatus = Schema.Struct({
  /** The message's id, as `enqueue` returned it. */
  id: Schema.String,
  /** Where it is. */
  state: MessageState,
  /** When it was enqueued. */
  enqueuedAt: Schema.DateTimeUtc,
  /** When this status was last written. */
  updatedAt: Schema.DateTimeUtc,
  /** Attempts started so far (one that a crash cut short counts too). */
  attempts: Schema.Int,
  /** Attempts that ended in a temporary failure. */
  deferrals: Schema.Int,
  /** `deferred`: when the next attempt is due. */
  nextAttemptAt: Schema.optionalKey(Schema.DateTimeUtc),
  /** Why the last attempt failed, when it did. */
  lastError: Schema.optionalKey(DeliveryFailure),
  /** Every recipient, with its progress. */
  recipients: Schema.Array(RecipientStatus)
})
/** A message's status, decoded. */
export type MessageStatus = typeof MessageStatus.Type

/** The store behind the ledger failed. */
export class LedgerError extends Data.TaggedError("LedgerError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/** Messages not yet delivered or dead, across every process using the store. */
interface Depth {
  readonly depth: number
  /** When the oldest of them was enqueued. */
  readonly oldest: DateTime.Utc | undefined
}

/** The ledger of one named queue. */
export interface Ledger {
  /** Records a new message; `false` (and nothing changes) when its id is already known. */
  readonly create: (status: MessageStatus) => Effect.Effect<boolean, LedgerError>
  /** Replaces a message's record. A final record is kept for the store's retention, then forgotten. */
  readonly put: (status: MessageStatus) => Effect.Effect<void, LedgerError>
  readonly get: (id: string) => Effect.Effect<MessageStatus | undefined, LedgerError>
  readonly remove: (id: string) => Effect.Effect<void, LedgerError>
  readonly depth: Effect.Effect<Depth, LedgerError>
  /** Forgets final records older than the retention (in stores that do not expire them by themselves). */
  readonly cleanup: Effect.Effect<void, LedgerError>
}

/** A store of ledgers, one per queue name. */
export interface LedgerStore {
  readonly forQueue: (name: string) => Ledger
}

/** How long final records are kept by default: as long as PersistedQueue keeps completed elements. */
export const defaultRetention: Duration.Duration = Duration.days(30)

/** The record as JSON text, for stores that keep strings. */
export const encode = Schema.encodeSync(Schema.fromJsonString(Schema.toCodecJson(MessageStatus)))
const decodeJson = Schema.decodeUnknownEffect(Schema.fromJsonString(Schema.toCodecJson(MessageStatus)))
export const decode = (text: string): Effect.Effect<MessageStatus, LedgerError> =>
  Effect.mapError(decodeJson(text), (cause) => new LedgerError({ message: "unreadable status record", cause }))

/** An in-memory ledger store: one process, gone with it. */
export const makeMemory = (retention: Duration.Duration = defaultRetention): LedgerStore => {
  const queues = new Map<string, Map<string, MessageStatus>>()
  const records = (name: string) => {
    let map = queues.get(name)
    if (map === undefined) queues.set(name, map = new Map())
    return map
  }
  return {
    forQueue: (name) => {
      const map = records(name)
      return {
        create: (status) =>
          Effect.sync(() => {
            if (map.has(status.id)) return false
            map.set(status.id, status)
            return true
          }),
        put: (status) => Effect.sync(() => void map.set(status.id, status)),
        get: (id) => Effect.sync(() => map.get(id)),
        remove: (id) => Effect.sync(() => void map.delete(id)),
        depth: Effect.sync(() => {
          let depth = 0
          let oldest: DateTime.Utc | undefined
          for (const status of map.values()) {
            if (isFinal(status.state)) continue
            depth++
            if (oldest === undefined || DateTime.isGreaterThan(oldest, status.enqueuedAt)) oldest = status.enqueuedAt
          }
          return { depth, oldest }
        }),
        cleanup: Effect.map(Clock.currentTimeMillis, (now) => {
            const cutoff = now - Duration.toMillis(retention)
            for (const [id, status] of map) {
              if (isFinal(status.state) && DateTime.toEpochMillis(status.updatedAt) < cutoff) map.delete(id)
            }
          })
      }
    }
  }
}
