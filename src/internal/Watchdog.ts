/**
 * One timer per connection instead of one per read or write. Racing a timeout against every
 * read costs two fibers and a timer per line (measured: most of the server's Effect overhead);
 * here an operation sets a deadline, which is an assignment, and one sleeping fiber keeps it.
 *
 * The sleeper wakes at the deadline it was started for; a deadline moved later in the
 * meantime (the usual case: every command pushes it on) just sends it back to sleep, and a
 * disarmed one lets it end. Only a deadline earlier than its wake-up replaces it. It sleeps
 * on the Clock service, so TestClock drives it in tests.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"

export interface Watchdog {
  /** Runs `onExpire` once `duration` has passed, unless re-armed or disarmed first. */
  readonly arm: (duration: Duration.Duration, onExpire: Effect.Effect<void>) => void
  readonly disarm: () => void
  /** The clock's time in milliseconds (TestClock's in tests). */
  readonly now: () => number
}

export const make: Effect.Effect<Watchdog, never, Scope.Scope> = Effect.gen(function*() {
  const clock = yield* Clock.Clock
  const context = yield* Effect.context<never>()
  const fork = Effect.runForkWith(context)
  let deadline: number | undefined
  let onExpire: Effect.Effect<void> = Effect.void
  let sleeper: Fiber.Fiber<void> | undefined
  // When the sleeper wakes up; undefined when there is none.
  let wakeAt: number | undefined
  let closed = false

  // Each sleeper has a generation; one replaced by an earlier deadline ends without acting.
  let generation = 0
  const check = (mine: number): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (mine !== generation) return Effect.void
      if (deadline === undefined) {
        sleeper = wakeAt = undefined
        return Effect.void
      }
      const now = clock.currentTimeMillisUnsafe()
      if (now >= deadline) {
        sleeper = wakeAt = deadline = undefined
        return onExpire
      }
      wakeAt = deadline
      return sleepThenCheck(mine, deadline - now)
    })
  const sleepThenCheck = (mine: number, millis: number) =>
    Effect.flatMap(clock.sleep(Duration.millis(millis)), () => check(mine))

  const start = (at: number, now: number) => {
    wakeAt = at
    sleeper = fork(sleepThenCheck(++generation, at - now))
  }

  const arm = (duration: Duration.Duration, expire: Effect.Effect<void>) => {
    if (closed) return
    const now = clock.currentTimeMillisUnsafe()
    deadline = now + Duration.toMillis(duration)
    onExpire = expire
    if (sleeper === undefined) return start(deadline, now)
    if (deadline < wakeAt!) {
      sleeper.interruptUnsafe()
      start(deadline, now)
    }
  }
  const disarm = () => {
    deadline = undefined
  }

  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      closed = true
      deadline = undefined
      sleeper?.interruptUnsafe()
    })
  )
  return { arm, disarm, now: () => clock.currentTimeMillisUnsafe() }
})
