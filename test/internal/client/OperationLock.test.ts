/**
 * The client's one-operation-at-a-time lock, where a fiber may yield at any step of the run
 * loop: a waiter that yields between seeing the lock held and joining the queue must not miss
 * the release that happens meanwhile.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scheduler from "effect/Scheduler"
import { OperationLock } from "../../../src/internal/client/OperationLock.ts"

/** An operation of `steps` scheduler turns. */
const turns = (steps: number): Effect.Effect<void> => {
  let body: Effect.Effect<void> = Effect.void
  for (let i = 0; i < steps; i++) body = Effect.andThen(body, Effect.yieldNow)
  return body
}

describe("OperationLock", () => {
  it.live("a second operation runs once the first ends, at every yield budget", () =>
    Effect.gen(function*() {
      // Small budgets make the run loop yield every few steps, so that some combination yields
      // exactly between the waiter's check and its joining the queue (from 3: at 2 the runtime
      // itself gets nowhere).
      for (let budget = 3; budget <= 24; budget++) {
        for (let steps = 0; steps <= 4; steps++) {
          const lock = new OperationLock()
          const second = yield* Effect.gen(function*() {
            const first = yield* Effect.forkChild(lock.run(() => turns(steps), () => undefined))
            const second = yield* Effect.forkChild(lock.run(() => Effect.succeed("second"), () => undefined))
            yield* Fiber.join(first)
            // Only a lost wake-up waits here: a second that ran ends at once.
            return yield* Effect.timeoutOption(Fiber.join(second), "2 seconds")
          }).pipe(Effect.provideService(Scheduler.MaxOpsBeforeYield, budget))
          assert.deepStrictEqual(second, Option.some("second"), `budget ${budget}, first operation of ${steps} turns`)
        }
      }
    }))

  it.effect("operations take the lock in call order", () =>
    Effect.gen(function*() {
      const lock = new OperationLock()
      const order: Array<number> = []
      const fibers = []
      for (let i = 0; i < 5; i++) {
        fibers.push(yield* Effect.forkChild(lock.run(() => Effect.andThen(turns(2), Effect.sync(() => order.push(i))), () => undefined)))
      }
      yield* Fiber.joinAll(fibers)
      assert.deepStrictEqual(order, [0, 1, 2, 3, 4])
    }))
})
