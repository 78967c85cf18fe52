/**
 * A durable outbound mail queue: `enqueue` stores a message and returns its id; workers, in as
 * many processes as you run, send it through the pooled `Mailer`, retry temporary failures for
 * days as an MTA does, and put what can never be delivered in a dead-letter queue.
 *
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Mailer from "effect-smtp/Mailer"
 * import * as MailQueue from "effect-smtp/MailQueue"
 * import * as NodeTransport from "effect-smtp/NodeTransport"
 *
 * const Queue = MailQueue.layer().pipe(Layer.provide(MailQueue.layerStoreMemory()))
 * const Workers = MailQueue.layerWorker({ concurrency: 4 }).pipe(
 *   Layer.provide(Mailer.layer({ host: "smtp.example.com", retry: false })),
 *   Layer.provide(NodeTransport.layer)
 * )
 *
 * const program = Effect.gen(function*() {
 *   const queue = yield* MailQueue.MailQueue
 *   const id = yield* queue.enqueue({ from: "app@example.com", to: "you@example.org", body: "Subject: hi\r\n\r\nhello\r\n" })
 *   return yield* queue.status(id) // queued, sending, deferred, delivered or dead
 * }).pipe(Effect.provide(Layer.provideMerge(Workers, Queue)))
 * ```
 *
 * It is built on Effect's `PersistedQueue` (`effect/persistence/PersistedQueue`), whose stores
 * it uses: memory (one process, lost with it), Redis, or PostgreSQL. Beside the queue, a small
 * ledger in the same store keeps each message's status and its recipients' progress.
 *
 * Delivery is at-least-once. A message is acknowledged only after the server accepted it and
 * its status was recorded; a worker that dies in between (after the server's 250, before the
 * acknowledgement) leaves it to another worker, which sends it again. To keep that rare:
 * recipients are recorded as delivered the moment an attempt ends, so a retry goes only to
 * those still pending (nobody gets a message twice because some other recipient was refused);
 * a status already final is never sent again; and an element is claimed under a lock that its
 * worker refreshes, so no second worker takes a message that is still being sent.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as DateTime from "effect/DateTime"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as PersistedQueue from "effect/persistence/PersistedQueue"
import type * as Redis from "effect/persistence/Redis"
import * as Pull from "effect/Pull"
import * as Result from "effect/Result"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as SqlClient from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as Address from "./Address.ts"
import * as Ledger from "./internal/queue/Ledger.ts"
import * as Outcome from "./internal/queue/Outcome.ts"
import * as RedisLedger from "./internal/queue/RedisLedger.ts"
import * as SqlLedger from "./internal/queue/SqlLedger.ts"
import { Mailer } from "./Mailer.ts"
import { MailOptions, RcptOptions } from "./MailOptions.ts"
import type { Recipient } from "./SmtpClient.ts"

export {
  /** Why an attempt failed. */
  DeliveryFailure,
  /** The state of a message. */
  MessageState,
  /** A message's status: its state, its recipients' progress, the last error. */
  MessageStatus,
  /** One recipient's progress. */
  RecipientStatus
} from "./internal/queue/Ledger.ts"

// ---------------------------------------------------------------------------
// Messages

/** A message to queue: as `SmtpClient.Message`, with the body in memory, as it is stored. */
export interface OutgoingMessage {
  /** The reverse-path; `null` for `MAIL FROM:<>`. */
  readonly from: string | null
  /** One recipient or several, each an address or a `Recipient` with its RCPT parameters. */
  readonly to: string | Recipient | ReadonlyArray<string | Recipient>
  /** The whole message, headers and body; a string is sent as UTF-8. */
  readonly body: string | Uint8Array
  /** MAIL FROM parameters, as `SmtpClient.Message`'s. */
  readonly mailOptions?: MailOptions | undefined
  /** DATA or BDAT, as `SmtpClient.Message`'s. Default "auto". */
  readonly transfer?: "auto" | "data" | "bdat" | undefined
}

/** A message as the queue keeps it: recipients as a list, the body as bytes, and when it was queued. */
export const QueuedMessage = Schema.Struct({
  /** The reverse-path; `null` for `<>`. */
  from: Schema.NullOr(Schema.String),
  /** Every recipient. */
  to: Schema.Array(Schema.Struct({
    /** The address. */
    address: Schema.String,
    /** Its RCPT TO parameters. */
    options: Schema.optionalKey(RcptOptions)
  })),
  /** The whole message. */
  body: Schema.Uint8Array,
  /** MAIL FROM parameters. */
  mailOptions: Schema.optionalKey(MailOptions),
  /** DATA or BDAT. */
  transfer: Schema.optionalKey(Schema.Literals(["auto", "data", "bdat"])),
  /** When it was enqueued. */
  enqueuedAt: Schema.DateTimeUtc
})
/** A queued message, decoded. */
export type QueuedMessage = typeof QueuedMessage.Type

/** A message that will never reach some of its recipients, with its final status. */
export const DeadLetter = Schema.Struct({
  /** The message's id. */
  id: Schema.String,
  /** The message, as it was queued. */
  message: QueuedMessage,
  /** Its final status: each recipient's refusal, or why it expired. */
  status: Ledger.MessageStatus
})
/** A dead letter, decoded. */
export type DeadLetter = typeof DeadLetter.Type

/** The queue's store failed, or a message cannot be queued as it is. */
export class MailQueueError extends Data.TaggedError("MailQueueError")<{
  /** `InvalidMessage`: an address, parameter or id that cannot be queued; `Store`: the store failed. */
  readonly reason: "InvalidMessage" | "Store"
  /** What exactly. */
  readonly message: string
  /** The store's error, for `Store`. */
  readonly cause?: unknown
}> {}

/** The queue as a whole, across every process sharing its store. */
export interface QueueStats {
  /** Messages not yet delivered or dead (queued, sending or deferred). */
  readonly depth: number
  /** How long the oldest of them has been in the queue. */
  readonly oldestAge: Duration.Duration | undefined
}

// ---------------------------------------------------------------------------
// The service

/**
 * The queue, the service `layer` provides: where an application enqueues and workers take.
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as MailQueue from "effect-smtp/MailQueue"
 *
 * export const orderConfirmed = (order: { readonly id: string; readonly email: string }) =>
 *   Effect.gen(function*() {
 *     const queue = yield* MailQueue.MailQueue
 *     // The order's id as the message's: enqueueing again after a crash is a no-op.
 *     return yield* queue.enqueue({
 *       from: "shop@example.com",
 *       to: order.email,
 *       body: `Message-ID: <order-${order.id}@example.com>\r\nSubject: Order ${order.id}\r\n\r\nThank you!\r\n`
 *     }, { id: `order-${order.id}` })
 *   })
 * ```
 */
export class MailQueue extends Context.Service<MailQueue, {
  /** The queue's name (`QueueOptions.name`). */
  readonly name: string
  /**
   * Stores a message and returns its id once the store has it. With `id`, enqueueing the same
   * id again (within the retention) is a no-op that returns it: a safe retry after a crash.
   */
  readonly enqueue: (
    message: OutgoingMessage,
    options?: { readonly id?: string | undefined }
  ) => Effect.Effect<string, MailQueueError>
  /** A message's status; none once it is unknown (or forgotten after the retention). */
  readonly status: (id: string) => Effect.Effect<Option.Option<Ledger.MessageStatus>, MailQueueError>
  /** Depth and age of the oldest message, from the store (and into the gauges). */
  readonly stats: Effect.Effect<QueueStats, MailQueueError>
  /**
   * Waits for the next message due, makes one attempt through the `Mailer` in context, and
   * returns its status afterwards. What the workers run in a loop.
   */
  readonly deliverNext: Effect.Effect<Ledger.MessageStatus, MailQueueError, Mailer>
  /**
   * Takes the next dead letter (waiting for one) and runs `f` on it; it is gone once `f`
   * succeeds, and offered again later if `f` fails.
   */
  readonly takeDeadLetter: <A, E, R>(
    f: (dead: DeadLetter) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | MailQueueError, R>
  /** Forgets delivered messages and handled dead letters older than the store's retention. */
  readonly cleanup: Effect.Effect<void, MailQueueError>
}>()("effect-smtp/MailQueue") {}

/** Where the queue lives: PersistedQueue's store and the ledger beside it. */
export class MailQueueStore extends Context.Service<MailQueueStore, {
  /** PersistedQueue's store: the messages and the dead letters. */
  readonly queues: PersistedQueue.PersistedQueueStore["Service"]
  /** The ledger's store: each message's status. */
  readonly ledgers: Ledger.LedgerStore
  /** How long delivered messages, handled dead letters and their ids are remembered. */
  readonly retention: Duration.Duration
}>()("effect-smtp/MailQueueStore") {}

/** How the queue retries a message that failed for now. */
export interface RetryOptions {
  /**
   * The delay before each retry; its input is the attempt number (1 after the first attempt).
   * Default: 5 minutes, doubling up to an hour (Postfix's backoff).
   */
  readonly schedule?: Schedule.Schedule<unknown, number> | undefined
  /** A message still undelivered this long after it was queued is dead. Default 5 days (Postfix). */
  readonly maxAge?: Duration.Input | undefined
  /** At most this many attempts. Default: no limit but `maxAge`. */
  readonly maxAttempts?: number | undefined
}

/** Options of `layer` and `make`. */
export interface QueueOptions {
  /** Queues with different names share a store without meeting. Letters, digits, `_` and `-`. Default "outbound". */
  readonly name?: string | undefined
  /** When to retry, and when to give up. */
  readonly retry?: RetryOptions | undefined
}

/** 5 minutes, doubling up to an hour between attempts: Postfix's backoff. */
export const defaultRetrySchedule: Schedule.Schedule<unknown, number> = Schedule.min([
  Schedule.exponential("5 minutes"),
  Schedule.spaced("1 hour")
])

/** 5 days: Postfix's `maximal_queue_lifetime`. */
export const defaultMaxAge: Duration.Duration = Duration.days(5)

// ---------------------------------------------------------------------------
// Metrics (per process; depth and age are the store's, refreshed by `stats`)

/** Counter `mail_queue_enqueued_total`: messages enqueued. */
export const enqueuedTotal = Metric.counter("mail_queue_enqueued_total", { description: "messages enqueued" })
/** Counter `mail_queue_attempts_total`: delivery attempts started. */
export const attemptsTotal = Metric.counter("mail_queue_attempts_total", { description: "delivery attempts started" })
/** Counter `mail_queue_deferrals_total`: attempts that ended in a temporary failure. */
export const deferralsTotal = Metric.counter("mail_queue_deferrals_total", {
  description: "attempts that ended in a temporary failure"
})
/** Counter `mail_queue_delivered_total`: messages every recipient accepted. */
export const deliveredTotal = Metric.counter("mail_queue_delivered_total", {
  description: "messages every recipient accepted"
})
/** Counter `mail_queue_bounces_total`: messages put in the dead-letter queue. */
export const bouncesTotal = Metric.counter("mail_queue_bounces_total", {
  description: "messages put in the dead-letter queue"
})
/** Gauge `mail_queue_depth`: messages not yet delivered or dead, for the whole store (set by `stats`). */
export const depthGauge = Metric.gauge("mail_queue_depth", { description: "messages not yet delivered or dead" })
/** Gauge `mail_queue_oldest_age_seconds`: the age of the oldest of them (set by `stats`). */
export const oldestAgeGauge = Metric.gauge("mail_queue_oldest_age_seconds", {
  description: "age of the oldest message not yet delivered or dead"
})

// ---------------------------------------------------------------------------
// Building the queue

const validName = /^[A-Za-z0-9_-]{1,100}$/
const validId = /^[\x21-\x7e]{1,200}$/
/** PersistedQueue's largest attempt count: int32-safe for its SQL store. */
const unlimitedAttempts = 2_147_483_647

/** Retries of a status write after a send: about 13 seconds, well within the stores' lock expiry. */
const recordRetry = Schedule.max([Schedule.exponential("100 millis"), Schedule.recurs(7)])

/** A temporary failure: PersistedQueue makes the element visible again after the schedule's delay. */
class Deferral extends Data.TaggedError("Deferral")<{ readonly status: Ledger.MessageStatus }> {}

const storeError = (message: string) => (cause: unknown) => new MailQueueError({ reason: "Store", message, cause })
const invalid = (message: string) => new MailQueueError({ reason: "InvalidMessage", message })

const encoder = new TextEncoder()

/** Checks the addresses and puts the message in its stored form. */
const prepare = (message: OutgoingMessage, enqueuedAt: DateTime.Utc): Result.Result<QueuedMessage, MailQueueError> => {
  const list = typeof message.to === "string" || !Array.isArray(message.to)
    ? [message.to as string | Recipient]
    : message.to as ReadonlyArray<string | Recipient>
  const seen = new Set<string>()
  const to: Array<QueuedMessage["to"][number]> = []
  for (const r of list) {
    const recipient = typeof r === "string" ? { address: r } : r
    const parsed = Address.parse(recipient.address, { utf8: true })
    if (Result.isFailure(parsed)) return Result.fail(invalid(`<${recipient.address}>: ${parsed.failure.message}`))
    if (seen.has(recipient.address)) continue
    seen.add(recipient.address)
    to.push(
      recipient.options === undefined
        ? { address: recipient.address }
        : { address: recipient.address, options: recipient.options }
    )
  }
  if (to.length === 0) return Result.fail(invalid("a message needs at least one recipient"))
  if (message.from !== null) {
    const parsed = Address.parse(message.from, { utf8: true })
    if (Result.isFailure(parsed)) return Result.fail(invalid(`<${message.from}>: ${parsed.failure.message}`))
  }
  return Result.succeed({
    from: message.from,
    to,
    body: typeof message.body === "string" ? encoder.encode(message.body) : message.body,
    ...(message.mailOptions === undefined ? {} : { mailOptions: message.mailOptions }),
    ...(message.transfer === undefined ? {} : { transfer: message.transfer }),
    enqueuedAt
  })
}

const firstStatus = (id: string, message: QueuedMessage): Ledger.MessageStatus => ({
  id,
  state: "queued",
  enqueuedAt: message.enqueuedAt,
  updatedAt: message.enqueuedAt,
  attempts: 0,
  deferrals: 0,
  recipients: message.to.map((r) => ({ address: r.address, state: "pending" as const }))
})

/**
 * The delay PersistedQueue waits before retrying after `attempts` attempts: the schedule
 * replayed up to that attempt, as PersistedQueue itself does (its stores keep the attempt
 * count, not the schedule's state), so the status can say when the next attempt is due.
 */
const retryDelay = (schedule: Schedule.Schedule<unknown, number>, attempts: number) =>
  Effect.gen(function*() {
    const step = yield* Schedule.toStep(schedule)
    let now = 0
    let delay = Duration.zero
    for (let i = 0; i < attempts; i++) {
      const result = yield* Pull.catchDone(step(now, i + 1), () => Effect.undefined)
      if (result === undefined) break
      delay = result[1]
      now += Duration.toMillis(delay)
    }
    return delay
  })

/** The status after an attempt's outcome, before deciding between done and deferred. */
const applyOutcome = (status: Ledger.MessageStatus, outcome: Outcome.Outcome, now: DateTime.Utc): Ledger.MessageStatus => {
  const delivered = new Map(outcome.delivered.map((d) => [d.address, d.reply]))
  const deferred = new Map(outcome.deferred.map((d) => [d.address, d.error]))
  const failed = new Map(outcome.failed.map((d) => [d.address, d.error]))
  const recipients = status.recipients.map((r): Ledger.RecipientStatus => {
    const reply = delivered.get(r.address)
    if (reply !== undefined) return { address: r.address, state: "delivered", reply }
    const fatal = failed.get(r.address)
    if (fatal !== undefined) return { address: r.address, state: "failed", error: fatal }
    const later = deferred.get(r.address)
    if (later !== undefined) return { address: r.address, state: "pending", error: later }
    return r
  })
  const { lastError: _, nextAttemptAt: __, ...rest } = status
  const lastError = outcome.error ?? outcome.deferred[0]?.error ?? outcome.failed[0]?.error
  return { ...rest, recipients, updatedAt: now, ...(lastError === undefined ? {} : { lastError }) }
}

/** The end of a message that ran out of time or attempts: its pending recipients failed. */
const expire = (
  status: Ledger.MessageStatus,
  attempts: number,
  now: DateTime.Utc,
  error: Ledger.DeliveryFailure
): Ledger.MessageStatus => {
  const recipients = status.recipients.map((r): Ledger.RecipientStatus =>
    r.state === "pending" ? { address: r.address, state: "failed", error: r.error ?? error } : r
  )
  const { nextAttemptAt: _, ...rest } = status
  return { ...rest, state: "dead", attempts, updatedAt: now, recipients, lastError: error }
}

/** Builds the queue over the store in context. */
export const make = (options: QueueOptions = {}): Effect.Effect<MailQueue["Service"], never, MailQueueStore> =>
  Effect.gen(function*() {
    const name = options.name ?? "outbound"
    if (!validName.test(name)) return yield* Effect.die(new Error(`invalid mail queue name "${name}"`))
    const store = yield* MailQueueStore
    const schedule = options.retry?.schedule ?? defaultRetrySchedule
    const maxAge = Duration.fromInputUnsafe(options.retry?.maxAge ?? defaultMaxAge)
    const maxAttempts = options.retry?.maxAttempts ?? unlimitedAttempts
    const ledger = store.ledgers.forQueue(name)
    const factory = yield* PersistedQueue.makeFactory.pipe(
      Effect.provideService(PersistedQueue.PersistedQueueStore, store.queues)
    )
    const queue = yield* factory.make({
      name,
      schema: QueuedMessage,
      // One more than ours: after a crash on the last attempt, the message comes back once
      // more instead of ending in PersistedQueue's failed state with a status still "sending".
      maxAttempts: Math.min(maxAttempts + 1, unlimitedAttempts),
      retrySchedule: schedule
    })
    const deadLetters = yield* factory.make({ name: `${name}.dead`, schema: DeadLetter })
    const attributes = { queue: name }
    const count = (metric: Metric.Metric<number, unknown>) => Metric.update(Metric.withAttributes(metric, attributes), 1)

    const enqueue = Effect.fn("MailQueue.enqueue")(function*(
      message: OutgoingMessage,
      opts?: { readonly id?: string | undefined }
    ) {
      const prepared = yield* Effect.fromResult(prepare(message, yield* DateTime.now))
      const id = opts?.id ?? crypto.randomUUID()
      if (!validId.test(id)) return yield* invalid("a message id is 1 to 200 printable ASCII characters, no spaces")
      const created = yield* ledger.create(firstStatus(id, prepared)).pipe(
        Effect.mapError(storeError("could not record the message"))
      )
      // Offered even when the id was known: PersistedQueue drops a duplicate, and an earlier
      // enqueue that crashed between the two writes is completed.
      yield* queue.offer(prepared, { id }).pipe(
        Effect.catch((cause) =>
          Effect.andThen(
            created ? Effect.ignore(ledger.remove(id)) : Effect.void,
            Effect.fail(storeError("could not store the message")(cause))
          )
        )
      )
      if (created) yield* count(enqueuedTotal)
      return id
    })

    /**
     * Records what an attempt did. The server has answered by now: failing to record it would
     * send the message again, so a store that fails is retried for a while first.
     */
    const record = (status: Ledger.MessageStatus) =>
      ledger.put(status).pipe(
        Effect.retry(recordRetry),
        Effect.mapError(storeError("could not update the message's status"))
      )

    const bury = (id: string, message: QueuedMessage, status: Ledger.MessageStatus) =>
      deadLetters.offer({ id, message, status }, { id }).pipe(Effect.mapError(storeError("could not store the dead letter")))

    /** Records the end of a message (delivered or dead) and files a dead letter. */
    const finish = (id: string, message: QueuedMessage, status: Ledger.MessageStatus) =>
      Effect.gen(function*() {
        yield* record(status)
        if (status.state === "dead") {
          yield* bury(id, message, status)
          yield* count(bouncesTotal)
          const failed = status.recipients.filter((r) => r.state === "failed")
          yield* Effect.logWarning(
            `dead-lettered: ${failed.map((r) => `<${r.address}> ${r.error?.message ?? ""}`).join("; ")}`
          )
        } else {
          yield* count(deliveredTotal)
          yield* Effect.logInfo("delivered")
        }
        return status
      })

    const attempt = (message: QueuedMessage, meta: { readonly id: string; readonly attempts: number }) =>
      Effect.gen(function*() {
        const mailer = yield* Mailer
        const { id, attempts } = meta
        const known = yield* ledger.get(id).pipe(Effect.mapError(storeError("could not read the message's status")))
        const status = known ?? firstStatus(id, message)
        // Done before (its acknowledgement was lost): never sent again.
        if (status.state === "delivered") return status
        if (status.state === "dead") return yield* Effect.as(bury(id, message, status), status)

        const startedAt = yield* DateTime.now
        // The previous attempt never ended (its worker died, perhaps because of this message):
        // past the maximum age or the attempts, no more tries.
        const tooOld = Duration.isGreaterThanOrEqualTo(DateTime.distance(message.enqueuedAt, startedAt), maxAge)
        if (status.state === "sending" && (attempts > maxAttempts || tooOld)) {
          return yield* finish(id, message, expire(status, attempts - 1, startedAt, {
            kind: "Expired",
            message: `gave up after ${attempts - 1} attempts: the last one never finished`
          }))
        }
        const pending = status.recipients.filter((r) => r.state === "pending").map((r) => r.address)
        const { nextAttemptAt: _, ...current } = status
        const sending: Ledger.MessageStatus = { ...current, state: "sending", attempts, updatedAt: startedAt }
        yield* ledger.put(sending).pipe(Effect.mapError(storeError("could not update the message's status")))
        yield* count(attemptsTotal)

        const byAddress = new Map(message.to.map((r) => [r.address, r]))
        const exit = yield* Effect.exit(mailer.send({
          from: message.from,
          to: pending.map((address) => byAddress.get(address) ?? { address }),
          body: message.body,
          ...(message.mailOptions === undefined ? {} : { mailOptions: message.mailOptions }),
          ...(message.transfer === undefined ? {} : { transfer: message.transfer })
        })).pipe(
          // Shutting down mid-send: the element goes back to the queue, the status with it.
          Effect.onInterrupt(() => Effect.ignore(ledger.put(status)))
        )
        if (exit._tag === "Failure" && exit.cause.reasons.some(Cause.isDieReason)) {
          yield* Effect.logError("the Mailer died", exit.cause)
        }
        const now = yield* DateTime.now
        const outcome = Outcome.classify(pending, exit)
        const after = applyOutcome(sending, outcome, now)
        const anyFailed = after.recipients.some((r) => r.state === "failed")
        if (outcome.deferred.length === 0) {
          return yield* finish(id, message, { ...after, state: anyFailed ? "dead" : "delivered" })
        }

        const age = DateTime.distance(message.enqueuedAt, now)
        if (Duration.isGreaterThanOrEqualTo(age, maxAge) || attempts >= maxAttempts) {
          const last = after.lastError === undefined ? "" : `: ${after.lastError.message}`
          return yield* finish(id, message, expire(after, attempts, now, {
            kind: "Expired",
            message: `gave up after ${attempts} attempts in ${Duration.format(age)}${last}`
          }))
        }
        const delay = yield* retryDelay(schedule, attempts)
        const deferred: Ledger.MessageStatus = {
          ...after,
          state: "deferred",
          deferrals: after.deferrals + 1,
          nextAttemptAt: DateTime.addDuration(now, delay)
        }
        yield* record(deferred)
        yield* count(deferralsTotal)
        yield* Effect.logInfo(`deferred: ${after.lastError?.message ?? ""}; next attempt in ${Duration.format(delay)}`)
        return yield* new Deferral({ status: deferred })
      }).pipe(
        Effect.annotateLogs({ queue: name, message: meta.id, attempt: meta.attempts }),
        Effect.withSpan("MailQueue.attempt", { attributes: { queue: name, id: meta.id, attempt: meta.attempts } }, {
          captureStackTrace: false
        })
      )

    const deliverNext: Effect.Effect<Ledger.MessageStatus, MailQueueError, Mailer> = queue.take(attempt).pipe(
      Effect.catchTag("Deferral", (d) => Effect.succeed(d.status)),
      Effect.catchTag("PersistedQueueError", (e) => Effect.fail(storeError("could not take a message")(e)))
    )

    const stats = Effect.gen(function*() {
      const { depth, oldest } = yield* ledger.depth.pipe(Effect.mapError(storeError("could not read the queue's depth")))
      const oldestAge = oldest === undefined ? undefined : DateTime.distance(oldest, yield* DateTime.now)
      yield* Metric.update(Metric.withAttributes(depthGauge, attributes), depth)
      const seconds = oldestAge === undefined ? 0 : Duration.toSeconds(oldestAge)
      yield* Metric.update(Metric.withAttributes(oldestAgeGauge, attributes), seconds)
      return { depth, oldestAge }
    })

    return MailQueue.of({
      name,
      enqueue,
      status: (id) =>
        ledger.get(id).pipe(
          Effect.map(Option.fromUndefinedOr),
          Effect.mapError(storeError("could not read the message's status"))
        ),
      stats,
      deliverNext,
      takeDeadLetter: (f) =>
        deadLetters.take((dead) => f(dead)).pipe(
          Effect.catchIf(
            (e): e is PersistedQueue.PersistedQueueError => e instanceof PersistedQueue.PersistedQueueError,
            (e) => Effect.fail(storeError("could not take a dead letter")(e))
          )
        ),
      cleanup: Effect.all([
        store.queues.cleanup({ timeToLive: store.retention, failedTimeToLive: undefined }),
        ledger.cleanup
      ]).pipe(Effect.asVoid, Effect.mapError(storeError("could not clean up")))
    })
  })

/** The queue as a Layer, over a store (`layerStoreMemory`, `layerStoreRedis`, `layerStoreSql`). */
export const layer = (options?: QueueOptions): Layer.Layer<MailQueue, never, MailQueueStore> =>
  Layer.effect(MailQueue, make(options))

// ---------------------------------------------------------------------------
// Workers

/** Options of `worker` and `layerWorker`. */
export interface WorkerOptions {
  /** Messages sent at once by this process. Default 5 (the Mailer's default pool size). */
  readonly concurrency?: number | undefined
  /** How often this worker forgets old records and refreshes the depth gauges. Default 1 hour. */
  readonly cleanupInterval?: Duration.Input | undefined
}

/**
 * Delivers messages until interrupted: `concurrency` loops of `deliverNext`. A store that fails
 * is logged and tried again a second later.
 */
export const worker = (options: WorkerOptions = {}): Effect.Effect<never, never, MailQueue | Mailer> =>
  Effect.gen(function*() {
    const queue = yield* MailQueue
    const loop = queue.deliverNext.pipe(
      Effect.catch((e) => Effect.andThen(Effect.logWarning("mail queue worker", e), Effect.sleep("1 second"))),
      Effect.forever
    )
    const upkeep = Effect.andThen(queue.cleanup, queue.stats).pipe(
      Effect.catch((e) => Effect.logWarning("mail queue upkeep", e)),
      Effect.repeat(Schedule.spaced(options.cleanupInterval ?? "1 hour"))
    )
    yield* Effect.forkChild(upkeep)
    return yield* Effect.forEach(Array.from({ length: Math.max(1, options.concurrency ?? 5) }), () => loop, {
      concurrency: "unbounded",
      discard: true
    }).pipe(Effect.andThen(Effect.never))
  })

/** Workers as a Layer: they run while the Layer is alive. */
export const layerWorker = (options?: WorkerOptions): Layer.Layer<never, never, MailQueue | Mailer> =>
  Layer.effectDiscard(Effect.forkScoped(worker(options)))

// ---------------------------------------------------------------------------
// Stores

/** Options of every store. */
export interface StoreOptions {
  /** How long delivered messages, handled dead letters and their ids are remembered. Default 30 days. */
  readonly retention?: Duration.Input | undefined
}

/** Options of the stores several processes share (Redis, SQL). */
export interface SharedStoreOptions extends StoreOptions {
  /** How often an idle worker looks for due messages (offers in the same process wake it at once). Default 1 second. */
  readonly pollInterval?: Duration.Input | undefined
  /** A worker renews its claim on the messages it is sending this often. Default 30 seconds. */
  readonly lockRefreshInterval?: Duration.Input | undefined
  /**
   * A claim not renewed for this long (its worker died) is released to other workers.
   * Default 90 seconds (Redis), 2 minutes (SQL).
   */
  readonly lockExpiration?: Duration.Input | undefined
}

const retentionOf = (options: StoreOptions | undefined) =>
  Duration.fromInputUnsafe(options?.retention ?? Ledger.defaultRetention)

/** In memory: one process, lost with it. For development, tests and a single process that may lose mail. */
export const layerStoreMemory = (options?: StoreOptions): Layer.Layer<MailQueueStore> =>
  Layer.effect(
    MailQueueStore,
    Effect.map(PersistedQueue.PersistedQueueStore, (queues) =>
      MailQueueStore.of({ queues, ledgers: Ledger.makeMemory(retentionOf(options)), retention: retentionOf(options) }))
  ).pipe(Layer.provide(Layer.fresh(PersistedQueue.layerStoreMemory)))

/**
 * In Redis (`NodeRedis.layer` from `@effect/platform-node`): every process using the same Redis
 * and `prefix` shares the queue. As durable as the Redis is (`appendonly yes`; with
 * `appendfsync always`, nothing acknowledged is lost).
 */
export const layerStoreRedis = (
  options?: SharedStoreOptions & {
    /** Prefix of every key. Default "mailqueue:". */
    readonly prefix?: string | undefined
  }
): Layer.Layer<MailQueueStore, never, Redis.Redis> =>
  Layer.effect(
    MailQueueStore,
    Effect.gen(function*() {
      const prefix = options?.prefix ?? "mailqueue:"
      const retention = retentionOf(options)
      const queues = yield* PersistedQueue.makeStoreRedis({
        prefix: `${prefix}q:`,
        pollInterval: options?.pollInterval,
        lockRefreshInterval: options?.lockRefreshInterval,
        lockExpiration: options?.lockExpiration
      })
      const ledgers = yield* RedisLedger.make({ prefix: `${prefix}s:`, retention })
      return MailQueueStore.of({ queues, ledgers, retention })
    })
  )

/**
 * In PostgreSQL (`PgClient.layer` from `@effect/sql-pg`): every process using the same
 * database shares the queue; tables are created on first use. Each offer and status change is
 * a committed transaction.
 */
export const layerStoreSql = (
  options?: SharedStoreOptions & {
    /** The queue's table; the ledger is `<tableName>_status`. Default "mail_queue". */
    readonly tableName?: string | undefined
  }
): Layer.Layer<MailQueueStore, SqlError, SqlClient.SqlClient> =>
  Layer.effect(
    MailQueueStore,
    Effect.gen(function*() {
      const table = options?.tableName ?? "mail_queue"
      const retention = retentionOf(options)
      const queues = yield* PersistedQueue.makeStoreSql({
        tableName: table,
        pollInterval: options?.pollInterval,
        lockRefreshInterval: options?.lockRefreshInterval,
        lockExpiration: options?.lockExpiration
      })
      const ledgers = yield* SqlLedger.make({ table: `${table}_status`, retention })
      return MailQueueStore.of({ queues, ledgers, retention })
    })
  )
