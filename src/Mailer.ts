/**
 * A pooled mail sender: a service that sends over reused connections, retries temporary
 * failures on a schedule, and keeps to a rate limit shared by all its connections, and by
 * every process that shares a `RateLimiter` store with it.
 *
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Redacted from "effect/Redacted"
 * import * as Mailer from "effect-smtp/Mailer"
 * import * as NodeTransport from "effect-smtp/NodeTransport"
 *
 * const MailerLive = Mailer.layer({
 *   host: "smtp.example.com",
 *   auth: { _tag: "Password", username: "me", password: Redacted.make("secret") },
 *   pool: { size: 4 },
 *   rateLimit: { messages: 10, interval: "1 second" }
 * }).pipe(Layer.provide(NodeTransport.layer))
 *
 * const program = Mailer.send({ from: "me@example.com", to: "you@example.org", body: "Subject: hi\r\n\r\nhello\r\n" })
 *   .pipe(Effect.provide(MailerLive))
 * ```
 *
 * A send that is interrupted is abandoned cleanly: its connection is closed, never handed to
 * another send. A connection that broke (timeout, 421, protocol error) is closed too.
 *
 * The rate limit is kept by Effect's `RateLimiter` (`effect/persistence/RateLimiter`): the one in
 * context when there is one, so that Mailers in several processes sharing its store (Redis) keep
 * one limit together; otherwise one in this process's memory.
 *
 * ```ts
 * import * as NodeRedis from "@effect/platform-node/NodeRedis"
 * import * as RateLimiter from "effect/persistence/RateLimiter"
 *
 * const SharedLimit = RateLimiter.layer.pipe(
 *   Layer.provide(RateLimiter.layerStoreRedis()),
 *   Layer.provide(NodeRedis.layer({ url: "redis://127.0.0.1:6379" }))
 * )
 * const FleetMailer = MailerLive.pipe(Layer.provide(SharedLimit))
 * ```
 *
 * Retries cover a send that failed as a whole. Recipients refused while others were accepted
 * are in the result's `rejected` (with `isTemporary` on their error): sending to them again is
 * the caller's choice, as retrying the message would deliver it twice to the others.
 *
 * @since 0.1.0
 */
import type * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as RateLimiter from "effect/persistence/RateLimiter"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import type { ConnectOptions } from "./internal/client/Config.ts"
import * as Connection from "./internal/client/Connection.ts"
import * as Pool from "./internal/client/Pool.ts"
import { isTemporary, type Message, type SendError, type SendResult } from "./SmtpClient.ts"
import { SmtpError } from "./SmtpError.ts"
import { formatEndpoint, Network, TransportError } from "./Transport.ts"

/** How the Mailer keeps its connections. */
export interface PoolOptions {
  /** Connections open at most (and sends in flight). Default 5. */
  readonly size?: number | undefined
  /** Messages sent over one connection before it is closed and replaced. Default 100. */
  readonly maxMessagesPerConnection?: number | undefined
  /** An unused connection is closed (QUIT) after this long. Default 1 minute. */
  readonly idleTimeout?: Duration.Input | undefined
}

/** How the Mailer retries a send that failed as a whole. */
export interface RetryOptions {
  /**
   * When to try again; the failure is the schedule's input. Default: up to 3 retries,
   * 1, 2 and 4 seconds apart.
   */
  readonly schedule?: Schedule.Schedule<unknown, unknown> | undefined
  /** Which failures to retry. Default `SmtpClient.isTemporary` (4xx replies, connection failures). */
  readonly while?: ((error: unknown) => boolean) | undefined
}

/**
 * At most `messages` transactions start per `interval`, across all connections (and processes
 * sharing the `RateLimiter` store). A send over the limit waits for its turn.
 */
export interface RateLimit {
  /** Transactions that may start per `interval`. */
  readonly messages: number
  /** The window the limit counts in, e.g. "1 second", "1 hour". */
  readonly interval: Duration.Input
  /**
   * `"fixed-window"` (the default): up to `messages` start at once, the next ones in the next
   * window. `"token-bucket"`: a burst of `messages`, then one every `interval / messages`.
   */
  readonly algorithm?: "fixed-window" | "token-bucket" | undefined
  /**
   * Mailers whose limits have the same key (and store) share one limit. Default: one key per
   * server address, so every Mailer sending to the same server shares it.
   */
  readonly key?: string | undefined
}

/** Where and how to connect (as `SmtpClient.connect`), and how to pool, retry and limit. */
export interface MailerOptions extends ConnectOptions {
  /** How many connections, for how many messages each, kept open how long. */
  readonly pool?: PoolOptions | undefined
  /** `false` turns retries off. */
  readonly retry?: RetryOptions | false | undefined
  /** The rate limit, kept by the `RateLimiter` in context or, without one, in memory. */
  readonly rateLimit?: RateLimit | undefined
}

/** What `Mailer.send` can fail with: the client's failures, or the rate limit's store failing. */
export type MailerError = SendError | RateLimiter.RateLimiterError

/** The pooled sender, the service `layer` provides; `send` is the usual way to use it. */
export class Mailer extends Context.Service<Mailer, {
  /**
   * Sends one message over a pooled connection, retrying temporary failures. The body is run
   * once per attempt: a retried stream must be one that can run again.
   */
  readonly send: <E = never, R = never>(message: Message<E, R>) => Effect.Effect<SendResult, MailerError | E, R>
  /** Connections open now, and how many of them are idle. */
  readonly stats: Effect.Effect<{
    /** Connections open, idle or sending. */
    readonly open: number
    /** Connections open and waiting for a send. */
    readonly idle: number
  }>
}>()("effect-smtp/Mailer") {}

/** The default retry schedule: 3 retries, 1, 2 and 4 seconds apart. */
export const defaultRetrySchedule: Schedule.Schedule<unknown, unknown> = Schedule.max([
  Schedule.exponential("1 second"),
  Schedule.recurs(3)
])

/** A reused connection that turned out dead before the server did anything: try a fresh one. */
class Stale extends Data.TaggedError("Stale")<{ readonly error: unknown }> {}

const isStale = (error: unknown) => error instanceof TransportError || (error instanceof SmtpError && error.code === 421)

/** The default key of a rate limit: the server's address. */
const rateLimitKey = (options: ConnectOptions): string =>
  `effect-smtp/Mailer/${
    options.endpoint !== undefined
      ? formatEndpoint(options.endpoint)
      : options.path !== undefined
      ? `unix:${options.path}`
      : `${options.host ?? "localhost"}:${options.port ?? "default"}`
  }`

/** Waits until the next transaction fits in the rate limit. */
const makeLimiter = (limit: RateLimit, options: ConnectOptions) =>
  Effect.gen(function*() {
    const shared = yield* Effect.serviceOption(RateLimiter.RateLimiter)
    const limiter = Option.isSome(shared)
      ? shared.value
      : yield* RateLimiter.make.pipe(Effect.provide(RateLimiter.layerStoreMemory))
    return Effect.asVoid(RateLimiter.sleep(limiter, {
      key: limit.key ?? rateLimitKey(options),
      limit: limit.messages,
      window: limit.interval,
      algorithm: limit.algorithm ?? "fixed-window"
    }))
  })

/** Builds the service; the scope owns the pool (closing it says QUIT on idle connections). */
export const make = (options: MailerOptions): Effect.Effect<Mailer["Service"], never, Network | Scope.Scope> =>
  Effect.gen(function*() {
    const network = yield* Network
    const size = options.pool?.size ?? 5
    const pool = yield* Pool.make<Connection.PooledClient, SendError>({
      size,
      maxUses: options.pool?.maxMessagesPerConnection ?? 100,
      idleTimeout: Duration.fromInputUnsafe(options.pool?.idleTimeout ?? "1 minute"),
      open: Effect.provideService(Connection.connect(options), Network, network),
      reusable: (client: Connection.PooledClient) => client.isOpen()
    })
    const limiter = options.rateLimit === undefined ? undefined : yield* makeLimiter(options.rateLimit, options)
    const retry = options.retry

    const schedule = retry === false ? undefined : retry?.schedule ?? defaultRetrySchedule
    const retryWhile = retry === false ? undefined : retry?.while ?? isTemporary

    const send = <E, R>(message: Message<E, R>): Effect.Effect<SendResult, MailerError | E, R> => {
      const once = pool.use((client, reused) => {
        const before = client.progress()
        return Effect.mapError(
          client.send(message),
          (e) => (reused && client.progress() === before && isStale(e) ? new Stale({ error: e }) : e)
        )
      })
      // Every idle connection may have gone stale; a fresh one settles it.
      const fresh = (tries: number): typeof once =>
        Effect.catchIf(once, (e) => e instanceof Stale && tries < size, () => fresh(tries + 1))
      const unstale = Effect.mapError(fresh(0), (e) => (e instanceof Stale ? (e.error as SendError) : e))
      const attempt = limiter === undefined ? unstale : Effect.andThen(limiter, unstale)
      // The schedule is set up only once an attempt failed: it gets that failure as its first input.
      const retried = schedule === undefined || retryWhile === undefined ? attempt : Effect.catchIf(
        attempt,
        retryWhile,
        (first) => {
          let again = false
          const next = Effect.suspend(() => (again ? attempt : (again = true, Effect.fail(first))))
          return Effect.retry(next, { schedule, while: retryWhile })
        }
      )
      // Spans only where a tracer receives them: the default one keeps them nowhere.
      return Effect.withFiber((fiber) =>
        fiber.getRef(Tracer.Tracer) === Tracer.nativeTracer
          ? retried
          : Effect.withSpan(retried, "Mailer.send", { captureStackTrace: false })
      )
    }

    return Mailer.of({ send, stats: pool.stats })
  })

/**
 * The Mailer as a Layer; needs a `Network` (`NodeTransport.layer`, `MemoryTransport.layer` in
 * tests). Connections open on the first sends, not when the layer is built; closing the layer
 * says QUIT on the idle ones.
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Redacted from "effect/Redacted"
 * import * as Mailer from "effect-smtp/Mailer"
 * import * as NodeTransport from "effect-smtp/NodeTransport"
 *
 * const MailerLive = Mailer.layer({
 *   host: "smtp.example.com", // port 587, STARTTLS required, the certificate verified
 *   auth: { _tag: "Password", username: "app", password: Redacted.make("secret") },
 *   pool: { size: 4 },
 *   rateLimit: { messages: 10, interval: "1 second" }
 * }).pipe(Layer.provide(NodeTransport.layer))
 *
 * export const welcome = (to: string) =>
 *   Mailer.send({ from: "app@example.com", to, body: "Subject: Welcome\r\n\r\nHi!\r\n" })
 * // Effect.provide(MailerLive) once, where the program starts.
 * ```
 */
export const layer = (options: MailerOptions): Layer.Layer<Mailer, never, Network> => Layer.effect(Mailer, make(options))

/**
 * The Mailer with its options from `Config` (environment variables by default), each named
 * SMTP_CLIENT_ and its option's path in CONSTANT_CASE, as `SmtpServer.layerConfig`'s
 * SMTP_SERVER_:
 *
 * - `SMTP_CLIENT_HOST`, `SMTP_CLIENT_PORT`, or `SMTP_CLIENT_PATH` (a Unix socket);
 * - `SMTP_CLIENT_SECURITY` (`starttls`, `opportunistic`, `implicit`, `none`),
 *   `SMTP_CLIENT_PROTOCOL` (`smtp` or `lmtp`), `SMTP_CLIENT_LOCAL_NAME`;
 * - `SMTP_CLIENT_AUTH_USERNAME` and `SMTP_CLIENT_AUTH_PASSWORD` (read as `Redacted`), both or
 *   neither: password credentials, the strongest mechanism both sides know;
 * - `SMTP_CLIENT_ALLOW_INSECURE_AUTH`, `SMTP_CLIENT_LOG_TRAFFIC` (`true` or `false`);
 * - `SMTP_CLIENT_TIMEOUTS_CONNECT`, `_GREETING`, `_COMMAND`, `_MAIL`, `_RCPT`,
 *   `_DATA_INITIATION`, `_DATA_BLOCK`, `_DATA_TERMINATION`, `_TLS_HANDSHAKE`, `_QUIT`
 *   (durations: `30 seconds`, `5 minutes`);
 * - `SMTP_CLIENT_POOL_SIZE`, `SMTP_CLIENT_POOL_MAX_MESSAGES_PER_CONNECTION`,
 *   `SMTP_CLIENT_POOL_IDLE_TIMEOUT`;
 * - `SMTP_CLIENT_RATE_LIMIT_MESSAGES` and `SMTP_CLIENT_RATE_LIMIT_INTERVAL`, both or neither.
 *
 * A variable not set leaves its option to its default, as in `layer`. Fields of `overrides` win
 * (`timeouts` and `pool` field by field): `tls`, `retry` and other mechanisms go there. For a
 * second Mailer with variables of its own, provide it a `ConfigProvider.nested(provider, "BULK")`:
 * it then reads `BULK_SMTP_CLIENT_HOST` and so on. Effect's Config module is loaded only when
 * this layer is built.
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Mailer from "effect-smtp/Mailer"
 * import * as NodeTransport from "effect-smtp/NodeTransport"
 *
 * // SMTP_CLIENT_HOST=smtp.example.com SMTP_CLIENT_AUTH_USERNAME=app SMTP_CLIENT_AUTH_PASSWORD=…
 * const MailerLive = Mailer.layerConfig().pipe(Layer.provide(NodeTransport.layer))
 *
 * const program = Mailer.send({ from: "app@example.com", to: "you@example.org", body: "Subject: hi\r\n\r\nhello\r\n" })
 *   .pipe(Effect.provide(MailerLive))
 * ```
 */
export const layerConfig = (
  overrides: MailerOptions = {}
): Layer.Layer<Mailer, Config.ConfigError, Network> =>
  Layer.unwrap(Effect.map(
    Effect.flatMap(Effect.promise(() => import("./internal/client/Environment.ts")), (env) => env.fromConfig),
    (options) =>
      layer({
        ...options,
        ...overrides,
        timeouts: { ...options.timeouts, ...overrides.timeouts },
        pool: { ...options.pool, ...overrides.pool }
      })
  ))

/** Sends one message with the `Mailer` in context. */
export const send = <E = never, R = never>(
  message: Message<E, R>
): Effect.Effect<SendResult, MailerError | E, Mailer | R> => Mailer.use((mailer) => mailer.send(message))
