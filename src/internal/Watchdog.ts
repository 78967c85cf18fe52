/**
 * One timer per connection instead of one per read or write. Racing a timeout against every
 * read costs two fibers and a timer per line (measured: most of the server's Effect overhead);
 * here an operation sets a deadline, which is an assignment, and a single fiber sleeps until it.
 * It uses the Clock service, so TestClock drives it in tests.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Latch from "effect/Latch"
import type * as Scope from "effect/Scope"

export interface Watchdog {
  /** Runs `onExpire` once `duration` has passed, unless re-armed or disarmed first. */
  readonly arm: (duration: Duration.Duration, onExpire: Effect.Effect<void>) => void
  readonly disarm: () => void
}

export const make: Effect.Effect<Watchdog, never, Scope.Scope> = Effect.gen(function*() {
  const clock = yield* Clock.Clock
  const poke = yield* Latch.make(false)
  let deadline: number | undefined
  let onExpire: Effect.Effect<void> = Effect.void
  // When the fiber looks next; undefined while it waits to be poked.
  let wakeAt: number | undefined

  const arm = (duration: Duration.Duration, expire: Effect.Effect<void>) => {
    deadline = clock.currentTimeMillisUnsafe() + Duration.toMillis(duration)
    onExpire = expire
    // Only a deadline earlier than the fiber's next look needs to wake it.
    if (wakeAt === undefined || deadline < wakeAt) poke.openUnsafe()
  }
  const disarm = () => {
    deadline = undefined
  }

  const watch = Effect.gen(function*() {
    while (true) {
      if (deadline === undefined) {
        wakeAt = undefined
        yield* poke.await
        poke.closeUnsafe()
        continue
      }
      const now = clock.currentTimeMillisUnsafe()
      if (now >= deadline) {
        deadline = undefined
        yield* onExpire
        continue
      }
      wakeAt = deadline
      yield* Effect.raceFirst(clock.sleep(Duration.millis(deadline - now)), poke.await)
      poke.closeUnsafe()
    }
  })
  yield* Effect.forkScoped(watch)
  return { arm, disarm }
})
