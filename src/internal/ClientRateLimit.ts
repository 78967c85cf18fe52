/**
 * A sliding-window rate limit: at most `messages` starts in any `interval`. Callers queue
 * in order; one limiter is shared by every connection of a Mailer, so the limit holds
 * however many connections send at once.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Semaphore from "effect/Semaphore"

export interface RateLimit {
  readonly messages: number
  readonly interval: Duration.Input
}

/** Waits until one more start fits in the window, then records it. */
export type Limiter = Effect.Effect<void>

export const make = (limit: RateLimit): Effect.Effect<Limiter> =>
  Effect.map(Semaphore.make(1), (lock) => {
    const windowMs = Duration.toMillis(Duration.fromInputUnsafe(limit.interval))
    const starts: Array<number> = [] // at most `messages`, oldest first
    const forget = (now: number) => {
      while (starts.length > 0 && starts[0]! <= now - windowMs) starts.shift()
    }
    return lock.withPermits(1)(Effect.gen(function*() {
      let now = yield* Clock.currentTimeMillis
      forget(now)
      if (starts.length >= limit.messages) {
        yield* Effect.sleep(Duration.millis(starts[0]! + windowMs - now))
        now = yield* Clock.currentTimeMillis
        forget(now)
      }
      starts.push(now)
    }))
  })
