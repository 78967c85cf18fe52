/**
 * The restart policy of `serve --workers` in virtual time: a worker that keeps dying at once is
 * restarted after 100 ms, 200 ms, 400 ms … up to 10 s; one that ran for 10 s starts the count
 * over. (The real processes are in workers.test.ts.)
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { TestClock } from "effect/testing"
import { keepAlive, type Outcome, restartDelay } from "../../src/node/Workers.ts"

const settle = Effect.gen(function*() {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow
})

describe("serve --workers restarts", () => {
  it("the delay doubles from 100 ms to at most 10 s", () => {
    assert.deepStrictEqual(
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 20].map((n) => Duration.toMillis(restartDelay(n))),
      [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
    )
  })

  it.effect("a crash loop is restarted ever more slowly; a worker that lived 10 s resets the count", () =>
    Effect.gen(function*() {
      const starts: Array<number> = []
      const delays: Array<number> = []
      // How long each run lives before it exits: quick deaths, one long run, then quick again.
      const lives = [0, 0, 0, 0, 15_000, 0, 0]
      const lifetime = Effect.gen(function*() {
        starts.push(yield* Effect.clockWith((c) => c.currentTimeMillis))
        const life = lives[starts.length - 1] ?? 0
        if (life > 0) yield* Effect.sleep(Duration.millis(life))
        return { code: 1, signal: null, ready: true } satisfies Outcome
      })
      const fiber = yield* keepAlive(lifetime, (_, delay) => Effect.sync(() => void delays.push(Duration.toMillis(delay)))).pipe(
        Effect.forkChild
      )
      for (let i = 0; i < 400 && delays.length < lives.length; i++) {
        yield* settle
        yield* TestClock.adjust("100 millis")
      }
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(delays.slice(0, 7), [100, 200, 400, 800, 100, 200, 400])
      // Each start comes after the previous run's life and the delay chosen.
      const gaps = starts.slice(1).map((t, i) => t - starts[i]!)
      assert.deepStrictEqual(gaps.slice(0, 6), [100, 200, 400, 800, 15_100, 200])
    }))
})
