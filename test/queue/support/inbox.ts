/**
 * The server the queue delivers to in tests: effect-smtp's own SmtpServer (over TCP, or the
 * in-memory network for TestClock tests) with a backend that stores every message and can be
 * told to refuse a recipient or a message, or to hold a recipient's RCPT until released.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { Backend, Connection } from "../../../src/Backend.ts"
import { SmtpError } from "../../../src/SmtpError.ts"
import type { Endpoint, Network, TransportError } from "../../../src/Transport.ts"
import * as TestServer from "../../support/server.ts"

interface Stored {
  readonly from: string | null
  readonly rcpts: ReadonlyArray<string>
  readonly body: string
  /** The client's EHLO name. */
  readonly helo: string | undefined
}

interface Held {
  /** The EHLO name of the client whose RCPT is held. */
  readonly helo: string | undefined
  /** Lets the RCPT go on (it is accepted, if the connection is still there). */
  readonly release: Effect.Effect<void>
}

export interface Inbox {
  readonly endpoint: Endpoint
  /** The client side of the network the server listens on. */
  readonly network: Network["Service"]
  /** Every message stored, in order. */
  readonly messages: Array<Stored>
  /** Stored messages, as they arrive. */
  readonly arrivals: Queue.Queue<Stored>
  /** When each MAIL FROM arrived (Date.now()), in order. */
  readonly mailTimes: Array<number>
  /** The next RCPTs to `address` get these replies, one each (`undefined`: accepted); then every one is accepted. */
  readonly refuseRcpt: (address: string, ...errors: ReadonlyArray<SmtpError | undefined>) => void
  /** The next messages (after DATA) get these replies; then every one is stored. */
  readonly refuseData: (...errors: ReadonlyArray<SmtpError | undefined>) => void
  /** Holds the next RCPT to `address` (from now on) until released; the effect waits for it to arrive. */
  readonly holdRcpt: (address: string) => Effect.Effect<Held>
  /** How many messages went to `address`. */
  readonly copiesFor: (address: string) => number
}

export const tempFailure = SmtpError.of(451, [4, 3, 0], "Try again later")
export const noSuchUser = SmtpError.of(550, [5, 1, 1], "No such user")

export const start = (net: TestServer.Net = "tcp"): Effect.Effect<Inbox, TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const messages: Array<Stored> = []
    const arrivals = yield* Queue.unbounded<Stored>()
    const mailTimes: Array<number> = []
    const rcptPlans = new Map<string, Array<SmtpError | undefined>>()
    const dataPlan: Array<SmtpError | undefined> = []
    const holds = new Map<string, { readonly arrived: Deferred.Deferred<string | undefined>; readonly released: Deferred.Deferred<void> }>()

    const backend = Layer.succeed(
      Backend,
      Backend.of({
        newSession: () =>
          Effect.sync(() => {
            let from: string | null = null
            let rcpts: Array<string> = []
            return {
              mail: (sender) =>
                Effect.sync(() => {
                  mailTimes.push(Date.now())
                  from = sender
                  rcpts = []
                }),
              rcpt: (to) =>
                Effect.gen(function*() {
                  const hold = holds.get(to)
                  if (hold !== undefined) {
                    holds.delete(to)
                    const connection = yield* Connection
                    yield* Deferred.succeed(hold.arrived, connection.helo())
                    yield* Deferred.await(hold.released)
                  }
                  const error = rcptPlans.get(to)?.shift()
                  if (error !== undefined) return yield* error
                  rcpts.push(to)
                }),
              data: (body) =>
                Effect.gen(function*() {
                  const connection = yield* Connection
                  const text = yield* Stream.mkString(Stream.decodeText(body))
                  const error = dataPlan.shift()
                  if (error !== undefined) return yield* error
                  const stored: Stored = { from, rcpts: [...rcpts], body: text, helo: connection.helo() }
                  messages.push(stored)
                  yield* Queue.offer(arrivals, stored)
                }),
              reset: Effect.sync(() => {
                from = null
                rcpts = []
              })
            }
          })
      })
    )
    const server = yield* TestServer.start({ net, backend, domain: "mx.test" })
    return {
      endpoint: server.endpoint,
      network: server.network,
      messages,
      arrivals,
      mailTimes,
      refuseRcpt: (address, ...errors) => void rcptPlans.set(address, [...(rcptPlans.get(address) ?? []), ...errors]),
      refuseData: (...errors) => void dataPlan.push(...errors),
      holdRcpt: (address) => {
        const arrived = Deferred.makeUnsafe<string | undefined>()
        const released = Deferred.makeUnsafe<void>()
        holds.set(address, { arrived, released })
        return Effect.map(Deferred.await(arrived), (helo) => ({
          helo,
          release: Deferred.succeed(released, undefined).pipe(Effect.asVoid)
        }))
      },
      copiesFor: (address) => messages.filter((m) => m.rcpts.includes(address)).length
    }
  })
