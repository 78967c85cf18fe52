import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as RateLimiter from "effect/persistence/RateLimiter"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { TestClock } from "effect/testing"
import * as Mailer from "../src/Mailer.ts"
import * as MemoryTransport from "../src/MemoryTransport.ts"
import * as Sasl from "../src/Sasl.ts"
import * as SmtpClient from "../src/SmtpClient.ts"
import { SmtpError } from "../src/SmtpError.ts"
import { Network, TransportError } from "../src/Transport.ts"
import * as Scripted from "./support/ScriptedServer.ts"
import { countingSleeps, recordingTracer } from "./support/observe.ts"

const message = (n: number): SmtpClient.Message => ({
  from: "sender@example.com",
  to: `rcpt${n}@example.org`,
  body: `Subject: ${n}\r\n\r\nmessage ${n}\r\n`
})

/** A Mailer on the server's network, plaintext. */
const mailerFor = (server: Scripted.OwnServer, options: Partial<Mailer.MailerOptions> = {}) =>
  Mailer.make({ endpoint: server.endpoint, security: "none", ...options }).pipe(
    Effect.provideService(Network, server.network)
  )

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const reason = exit.cause.reasons.find((r) => r._tag === "Fail")
  if (reason === undefined || reason._tag !== "Fail") throw new Error(`expected a typed failure: ${String(exit.cause)}`)
  return reason.error
}

/**
 * Lets forked fibers run until they wait on something (in memory and on the TestClock, every
 * step is a scheduled task: this is a bound on steps, not on time).
 */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 200; i++) yield* Effect.yieldNow
})

describe("Mailer: the pool", () => {
  it.effect("sends over one reused connection", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer()
      const mailer = yield* mailerFor(server)
      for (const n of [1, 2, 3]) {
        const result = yield* mailer.send(message(n))
        assert.deepStrictEqual(result.accepted.map((a) => a.recipient), [`rcpt${n}@example.org`])
      }
      assert.strictEqual(server.sessions().total, 1)
      assert.deepStrictEqual(server.received.map((r) => new TextDecoder().decode(r.body)), [1, 2, 3].map((n) => `Subject: ${n}\r\n\r\nmessage ${n}\r\n`))
      assert.deepStrictEqual(yield* mailer.stats, { open: 1, idle: 1 })
    }))

  it.effect("replaces a connection after maxMessagesPerConnection messages", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer()
      const mailer = yield* mailerFor(server, { pool: { maxMessagesPerConnection: 2 } })
      for (const n of [1, 2, 3, 4, 5]) yield* mailer.send(message(n))
      assert.strictEqual(server.received.length, 5)
      assert.strictEqual(server.sessions().total, 3)
    }))

  it.effect("never has more than `size` connections; further sends wait for one", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const server = yield* Scripted.ownServer({ hooks: { data: () => Deferred.await(gate) } })
      const mailer = yield* mailerFor(server, { pool: { size: 2 } })
      const sends = yield* Effect.forkChild(Effect.forEach([1, 2, 3, 4, 5], (n) => mailer.send(message(n)), { concurrency: "unbounded" }))
      // Two bodies arrive, held by the backend; the other three sends wait for a connection.
      yield* Scripted.awaitEvent(server, "body")
      yield* Scripted.awaitEvent(server, "body")
      yield* settle
      assert.deepStrictEqual(server.sessions(), { total: 2, open: 2, maxOpen: 2 })
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(sends)
      assert.strictEqual(server.received.length, 5)
      assert.strictEqual(server.sessions().maxOpen, 2)
    }))

  it.effect("closes a connection left idle for idleTimeout, with QUIT", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer()
      const mailer = yield* mailerFor(server, { pool: { idleTimeout: "30 seconds" } })
      yield* mailer.send(message(1))
      yield* TestClock.adjust("29 seconds")
      assert.deepStrictEqual(yield* mailer.stats, { open: 1, idle: 1 })
      yield* TestClock.adjust("1 second")
      yield* Scripted.awaitEvent(server, "end")
      assert.deepStrictEqual(yield* mailer.stats, { open: 0, idle: 0 })
      yield* mailer.send(message(2))
      assert.strictEqual(server.sessions().total, 2)
    }))

  it.effect("each idle connection expires idleTimeout after its own last send", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const server = yield* Scripted.ownServer({ hooks: { data: () => Deferred.await(gate) } })
      const mailer = yield* mailerFor(server, { pool: { size: 2, idleTimeout: "30 seconds" } })
      // Two connections, both parked at 0 s.
      const both = yield* Effect.forkChild(Effect.forEach([1, 2], (n) => mailer.send(message(n)), { concurrency: 2 }))
      yield* Scripted.awaitEvent(server, "body")
      yield* Scripted.awaitEvent(server, "body")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(both)
      assert.deepStrictEqual(yield* mailer.stats, { open: 2, idle: 2 })
      // At 10 s one of them sends again: it is parked anew.
      yield* TestClock.adjust("10 seconds")
      yield* mailer.send(message(3))
      yield* TestClock.adjust("20 seconds") // 30 s: the other one expires
      yield* Scripted.awaitEvent(server, "end")
      assert.deepStrictEqual(yield* mailer.stats, { open: 1, idle: 1 })
      yield* TestClock.adjust("9 seconds")
      yield* settle
      assert.deepStrictEqual(yield* mailer.stats, { open: 1, idle: 1 })
      yield* TestClock.adjust("1 second") // 40 s: 30 s after its send
      yield* Scripted.awaitEvent(server, "end")
      assert.deepStrictEqual(yield* mailer.stats, { open: 0, idle: 0 })
      assert.strictEqual(server.sessions().total, 2)
    }))

  it.effect("a busy pool keeps one idle timer, not one per send", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer()
      const clock = yield* Clock.Clock
      const counter = { sleeps: 0 }
      const counting = countingSleeps(clock, counter)
      const mailer = yield* mailerFor(server).pipe(Effect.provideService(Clock.Clock, counting))
      for (let n = 0; n < 50; n++) yield* mailer.send(message(n))
      assert.strictEqual(server.received.length, 50)
      assert.isAtMost(counter.sleeps, 1)
    }))

  it.effect("closing the Mailer says QUIT on its idle connections", () =>
    Effect.gen(function*() {
      const network = yield* MemoryTransport.makeNetwork
      const quit = yield* Deferred.make<void>()
      const server = yield* Scripted.listen((p) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING")
          yield* p.chunk
          yield* p.send("250 ok\r\n250 ok\r\n354 go\r\n")
          yield* p.until("\r\n.\r\n")
          yield* p.reply(250, "queued")
          yield* p.expect("QUIT")
          yield* p.reply(221, "bye")
          yield* Deferred.succeed(quit, undefined)
        })).pipe(Effect.provideService(Network, network))
      const scope = yield* Scope.make()
      const mailer = yield* Mailer.make({ endpoint: server.endpoint, security: "none" }).pipe(
        Effect.provideService(Network, network),
        Scope.provide(scope)
      )
      yield* mailer.send(message(1))
      assert.isFalse(yield* Deferred.isDone(quit))
      yield* Scope.close(scope, Exit.void)
      yield* Deferred.await(quit)
      assert.deepStrictEqual(server.failures(), [])
    }))

  it.effect("an interrupted send is abandoned: its connection is closed, not reused", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer()
      const mailer = yield* mailerFor(server)
      yield* mailer.send(message(1))
      yield* Queue.clear(server.events)
      // More than one batch of writes, then the body stalls.
      const body = Stream.concat(Stream.succeed(new Uint8Array(100_000).fill(120)), Stream.never)
      const sending = yield* Effect.forkChild(mailer.send({ from: "a@example.com", to: "b@example.org", body }))
      yield* Scripted.awaitEvent(server, "body")
      yield* Fiber.interrupt(sending)
      // The server saw the connection drop mid-body: nothing was stored.
      yield* Scripted.awaitEvent(server, "failed")
      yield* Scripted.awaitEvent(server, "end")
      assert.strictEqual(server.received.length, 1)
      assert.deepStrictEqual(yield* mailer.stats, { open: 0, idle: 0 })
      yield* mailer.send(message(2))
      assert.strictEqual(server.sessions().total, 2)
      assert.strictEqual(server.received.length, 2)
    }))

  it.effect("a pooled connection the server dropped while idle is replaced without using a retry", () =>
    Effect.gen(function*() {
      const network = yield* MemoryTransport.makeNetwork
      // Connection 0 serves one message, then the server hangs up (421, then close).
      const server = yield* Scripted.listen((p, n) =>
        Effect.gen(function*() {
          yield* Scripted.greet(p, "PIPELINING")
          yield* p.chunk
          yield* p.send("250 ok\r\n250 ok\r\n354 go\r\n")
          yield* p.until("\r\n.\r\n")
          yield* p.reply(250, `stored on connection ${n}`)
          if (n === 0) yield* p.reply(421, "4.4.2 idle too long")
          else yield* p.expect("QUIT").pipe(Effect.andThen(p.reply(221, "bye")))
        })).pipe(Effect.provideService(Network, network))
      const mailer = yield* Mailer.make({ endpoint: server.endpoint, security: "none", retry: false }).pipe(
        Effect.provideService(Network, network)
      )
      assert.strictEqual((yield* mailer.send(message(1))).reply.text, "stored on connection 0")
      assert.strictEqual((yield* mailer.send(message(2))).reply.text, "stored on connection 1")
      assert.strictEqual(server.accepted(), 2)
      assert.deepStrictEqual(server.failures(), [])
    }))
})

describe("Mailer: retries", () => {
  it.effect("retries temporary failures on the schedule (1 s, then 2 s), then succeeds", () =>
    Effect.gen(function*() {
      let attempts = 0
      const server = yield* Scripted.ownServer({
        hooks: {
          rcpt: () => Effect.suspend(() => (++attempts <= 2 ? Effect.fail(SmtpError.of(451, [4, 3, 0], "greylisted")) : Effect.void))
        }
      })
      const mailer = yield* mailerFor(server)
      const sending = yield* Effect.forkChild(mailer.send(message(1)))
      // The refused transaction is reset, then the retry waits.
      yield* Scripted.awaitEvent(server, "reset")
      yield* settle
      assert.strictEqual(attempts, 1)
      yield* TestClock.adjust("999 millis")
      yield* settle
      assert.strictEqual(attempts, 1)
      yield* TestClock.adjust("1 millis")
      yield* Scripted.awaitEvent(server, "reset")
      yield* settle
      assert.strictEqual(attempts, 2)
      yield* TestClock.adjust("2 seconds")
      const result = yield* Fiber.join(sending)
      assert.strictEqual(attempts, 3)
      assert.strictEqual(result.accepted.length, 1)
      // The refusals were not failures of the connection: it was reused throughout.
      assert.strictEqual(server.sessions().total, 1)
    }))

  it.effect("gives up after the schedule, with the last error", () =>
    Effect.gen(function*() {
      let attempts = 0
      const server = yield* Scripted.ownServer({
        hooks: { rcpt: () => Effect.suspend(() => Effect.fail(SmtpError.of(450, [4, 2, 1], `busy ${++attempts}`))) }
      })
      const mailer = yield* mailerFor(server, { retry: { schedule: Schedule.recurs(2) } })
      const error = failureOf(yield* Effect.exit(mailer.send(message(1))))
      assert.strictEqual(error._tag, "RecipientsRefused")
      assert.strictEqual((error as SmtpClient.RecipientsRefused).rejected[0]!.error.message, "busy 3")
      assert.strictEqual(attempts, 3)
    }))

  it.effect("retry: false tries once", () =>
    Effect.gen(function*() {
      let attempts = 0
      const server = yield* Scripted.ownServer({
        hooks: { mail: () => Effect.suspend(() => Effect.fail(SmtpError.of(451, [4, 3, 0], `later ${++attempts}`))) }
      })
      const mailer = yield* mailerFor(server, { retry: false })
      const error = failureOf(yield* Effect.exit(mailer.send(message(1))))
      assert.strictEqual((error as SmtpError).code, 451)
      assert.strictEqual(attempts, 1)
    }))

  it.effect("does not retry permanent failures", () =>
    Effect.gen(function*() {
      let attempts = 0
      const server = yield* Scripted.ownServer({
        hooks: { mail: () => Effect.suspend(() => Effect.fail(SmtpError.of(550, [5, 7, 1], `refused ${++attempts}`))) }
      })
      const mailer = yield* mailerFor(server)
      const error = failureOf(yield* Effect.exit(mailer.send(message(1))))
      assert.strictEqual((error as SmtpError).code, 550)
      assert.strictEqual(attempts, 1)
    }))
})

describe("Mailer: the rate limit", () => {
  it.effect("holds across all pooled connections", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer()
      const mailer = yield* mailerFor(server, { pool: { size: 4 }, rateLimit: { messages: 2, interval: "1 second" } })
      const sends = yield* Effect.forkChild(
        Effect.forEach([1, 2, 3, 4, 5], (n) => mailer.send(message(n)), { concurrency: "unbounded" })
      )
      yield* Scripted.awaitEvent(server, "message")
      yield* Scripted.awaitEvent(server, "message")
      yield* settle
      assert.strictEqual(server.received.length, 2)
      yield* TestClock.adjust("999 millis")
      yield* settle
      assert.strictEqual(server.received.length, 2)
      yield* TestClock.adjust("1 millis")
      yield* Scripted.awaitEvent(server, "message")
      yield* Scripted.awaitEvent(server, "message")
      yield* settle
      assert.strictEqual(server.received.length, 4)
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(sends)
      assert.strictEqual(server.received.length, 5)
    }))

  it.effect("a RateLimiter in context is shared by every Mailer that uses the same key", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer()
      const limiter = yield* RateLimiter.make.pipe(Effect.provide(RateLimiter.layerStoreMemory))
      const shared = (key: string) =>
        mailerFor(server, { rateLimit: { messages: 2, interval: "1 second", key } }).pipe(
          Effect.provideService(RateLimiter.RateLimiter, limiter)
        )
      const [a, b, other] = [yield* shared("provider"), yield* shared("provider"), yield* shared("elsewhere")]
      yield* a.send(message(1))
      yield* a.send(message(2))
      // The third message of the window waits, whichever Mailer sends it; another key does not.
      const third = yield* Effect.forkChild(b.send(message(3)))
      yield* other.send(message(4))
      yield* settle
      assert.strictEqual(server.received.length, 3)
      yield* TestClock.adjust("999 millis")
      yield* settle
      assert.isUndefined(third.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(third)
      assert.strictEqual(server.received.length, 4)
    }))

  it.effect("with a tracer installed, each send is a Mailer.send span", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer()
      const ended: Array<string> = []
      const tracer = recordingTracer(ended)
      const mailer = yield* mailerFor(server)
      yield* Effect.withTracer(mailer.send(message(1)), tracer)
      assert.deepStrictEqual(ended, ["Mailer.send"])
      assert.strictEqual(server.received.length, 1)
    }))

  it.effect("Mailer.layer and Mailer.send work together", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer()
      const result = yield* Mailer.send(message(7)).pipe(
        Effect.provide(Mailer.layer({ endpoint: server.endpoint, security: "none" }).pipe(
          Layer.provide(Layer.succeed(Network, server.network))
        ))
      )
      assert.strictEqual(result.accepted[0]!.recipient, "rcpt7@example.org")
      assert.strictEqual(server.received.length, 1)
    }))
})

describe("Mailer.layerConfig", () => {
  const auth = Sasl.serverMechanisms({
    password: Sasl.passwordVerifier((user) => Effect.succeed(user === "alice" ? Redacted.make("correct horse") : undefined))
  })
  /** A Mailer from these variables, on the server's network. */
  const mailerFrom = (server: Scripted.OwnServer, env: Record<string, string>, overrides: Mailer.MailerOptions = {}) => {
    const endpoint = server.endpoint as { readonly host: string; readonly port: number }
    const provider = ConfigProvider.fromEnvRecord({
      SMTP_CLIENT_HOST: endpoint.host,
      SMTP_CLIENT_PORT: String(endpoint.port),
      SMTP_CLIENT_SECURITY: "none",
      ...env
    })
    return Mailer.layerConfig(overrides).pipe(
      Layer.provide(Layer.succeed(Network, server.network)),
      Layer.provide(ConfigProvider.layer(provider))
    )
  }

  it.effect("reads where to connect, the credentials and the pool; overrides join the pool field by field", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer({ allowInsecureAuth: true, hooks: { auth } })
      const env = {
        SMTP_CLIENT_AUTH_USERNAME: "alice",
        SMTP_CLIENT_AUTH_PASSWORD: "correct horse",
        SMTP_CLIENT_ALLOW_INSECURE_AUTH: "true",
        SMTP_CLIENT_POOL_MAX_MESSAGES_PER_CONNECTION: "2"
      }
      yield* Effect.forEach([1, 2, 3], (n) => Mailer.send(message(n))).pipe(
        Effect.provide(mailerFrom(server, env, { pool: { size: 1 } }))
      )
      assert.strictEqual(server.received.length, 3)
      assert.strictEqual(server.sessions().total, 2) // two messages per connection, from the environment
      // The password really is the one used: a wrong one is refused (535, not retried).
      const wrong = yield* Effect.exit(Mailer.send(message(4)).pipe(
        Effect.provide(mailerFrom(server, { ...env, SMTP_CLIENT_AUTH_PASSWORD: "wrong" }))
      ))
      assert.strictEqual((failureOf(wrong) as SmtpError).code, 535)
    }))

  it.effect("reads the timeouts: a greeting slower than SMTP_CLIENT_TIMEOUTS_GREETING times out", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer({ greetingDelay: "1 minute" })
      const sending = yield* Effect.forkChild(Mailer.send(message(1)).pipe(
        Effect.provide(mailerFrom(server, { SMTP_CLIENT_TIMEOUTS_GREETING: "10 seconds" }, { retry: false }))
      ))
      yield* settle
      yield* TestClock.adjust("10 seconds")
      const error = failureOf(yield* Fiber.await(sending))
      assert.instanceOf(error, TransportError)
      assert.strictEqual((error as TransportError).reason, "Timeout")
    }))

  it.effect("a user name without a password, or a bad value, fails the layer naming the variables", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer()
      const build = (env: Record<string, string>) =>
        Effect.exit(Effect.scoped(Layer.build(mailerFrom(server, env)))).pipe(Effect.map(String))
      const halfAuth = yield* build({ SMTP_CLIENT_AUTH_USERNAME: "alice" })
      assert.include(halfAuth, "SMTP_CLIENT_AUTH_USERNAME and SMTP_CLIENT_AUTH_PASSWORD go together")
      assert.include(yield* build({ SMTP_CLIENT_SECURITY: "tls" }), "SMTP_CLIENT_SECURITY")
      assert.include(yield* build({ SMTP_CLIENT_POOL_SIZE: "many" }), "SMTP_CLIENT_POOL_SIZE")
    }))

  it.effect("a second Mailer reads variables of its own under ConfigProvider.nested", () =>
    Effect.gen(function*() {
      const server = yield* Scripted.ownServer()
      const endpoint = server.endpoint as { readonly host: string; readonly port: number }
      const provider = ConfigProvider.fromEnvRecord({
        BULK_SMTP_CLIENT_HOST: endpoint.host,
        BULK_SMTP_CLIENT_PORT: String(endpoint.port),
        BULK_SMTP_CLIENT_SECURITY: "none"
      })
      yield* Mailer.send(message(1)).pipe(Effect.provide(Mailer.layerConfig().pipe(
        Layer.provide(Layer.succeed(Network, server.network)),
        Layer.provide(ConfigProvider.layer(ConfigProvider.nested(provider, "BULK")))
      )))
      assert.strictEqual(server.received.length, 1)
    }))
})
