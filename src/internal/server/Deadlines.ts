/**
 * Deadlines for every connection of a server, kept by one sleeping fiber.
 *
 * Each connection has a `Watchdog`: arming it is an assignment, not a timer. The server's
 * `Deadlines` files each watchdog once in a heap ordered by time, and sleeps until the earliest.
 * A deadline pushed later in the meantime (the usual case: every command pushes it on) is filed
 * again when its old time comes up; a disarmed one is taken out then. Only a deadline earlier
 * than every filed one wakes the sleeper. So a command costs no timer and no
 * fiber, an idle connection holds no fiber of its own, and a server holds one timer in all.
 *
 * It sleeps on the Clock service, so TestClock drives it in tests.
 */
import * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"

export interface Watchdog {
  /**
   * Runs `onExpire` once `millis` milliseconds have passed, unless re-armed or disarmed first.
   * (Milliseconds, not a Duration: arming happens for every command and converting allocates.)
   */
  readonly arm: (millis: number, onExpire: Effect.Effect<void>) => void
  readonly disarm: () => void
  /** The clock's time in milliseconds (TestClock's in tests). */
  readonly now: () => number
}

export interface Deadlines {
  /** A watchdog for one connection; `close` it when the connection ends. */
  readonly watchdog: () => Watchdog & { readonly close: () => void }
}

class Dog implements Watchdog {
  deadline: number | undefined = undefined
  onExpire: Effect.Effect<void> = Effect.void
  /** Where this watchdog is in the heap (-1: not there), and the time it is filed under. */
  index = -1
  key = 0
  closed = false
  readonly keeper: Keeper
  constructor(keeper: Keeper) {
    this.keeper = keeper
  }
  arm(millis: number, onExpire: Effect.Effect<void>) {
    if (this.closed) return
    const at = this.keeper.clock.currentTimeMillisUnsafe() + millis
    this.deadline = at
    this.onExpire = onExpire
    // Later than where it is filed: it is filed again when that time comes.
    if (this.index < 0 || at < this.key) this.keeper.file(this, at)
  }
  disarm() {
    this.deadline = undefined
  }
  now() {
    return this.keeper.clock.currentTimeMillisUnsafe()
  }
  close() {
    this.closed = true
    this.deadline = undefined
    this.onExpire = Effect.void
    if (this.index >= 0) this.keeper.remove(this)
  }
}

/**
 * How close to a deadline counts as at it, in milliseconds. Times are fractional (a body's
 * deadline grows by a fraction of a millisecond per byte), and a clock that reads a hair before
 * a deadline must not send the sleeper back to sleep for nothing, over and over.
 */
const DUE = 1e-6

class Keeper {
  readonly clock: Clock.Clock
  readonly fork: (effect: Effect.Effect<void>) => Fiber.Fiber<void>
  /** A binary min-heap of watchdogs on `key`; each knows its index. */
  readonly heap: Array<Dog> = []
  sleeper: Fiber.Fiber<void> | undefined = undefined
  /** When the sleeper wakes up; undefined when there is none. */
  wakeAt: number | undefined = undefined
  closed = false

  constructor(clock: Clock.Clock, services: Context.Context<never>) {
    this.clock = clock
    this.fork = Effect.runForkWith(services)
  }

  file(dog: Dog, at: number) {
    dog.key = at
    if (dog.index < 0) {
      dog.index = this.heap.length
      this.heap.push(dog)
    }
    this.up(dog.index)
    if (!this.closed && (this.wakeAt === undefined || at < this.wakeAt)) {
      this.sleeper?.interruptUnsafe()
      this.sleepUntil(at)
    }
  }

  remove(dog: Dog) {
    const heap = this.heap
    const i = dog.index
    const last = heap.pop()!
    dog.index = -1
    if (last === dog) return
    heap[i] = last
    last.index = i
    this.down(i)
    this.up(last.index)
  }

  // Each sleeper has a generation: one replaced by an earlier deadline ends without acting.
  generation = 0

  sleepUntil(at: number) {
    this.wakeAt = at
    const millis = Math.max(0, at - this.clock.currentTimeMillisUnsafe())
    const mine = ++this.generation
    this.sleeper = this.fork(Effect.flatMap(this.clock.sleep(Duration.millis(millis)), () => this.wake(mine)))
  }

  /** Fires what is due, files again what was pushed later, and sleeps until the next. */
  wake(mine: number): Effect.Effect<void> {
    return Effect.sync(() => {
      if (mine !== this.generation) return
      this.sleeper = this.wakeAt = undefined
      const now = this.clock.currentTimeMillisUnsafe()
      const heap = this.heap
      while (heap.length > 0 && heap[0]!.key - now < DUE) {
        const dog = heap[0]!
        const deadline = dog.deadline
        if (deadline !== undefined && deadline - now >= DUE) {
          dog.key = deadline
          this.down(0)
          continue
        }
        this.remove(dog)
        if (deadline === undefined) continue
        dog.deadline = undefined
        // Each expiry on a fiber of its own: a slow farewell must not hold the others back.
        this.fork(dog.onExpire)
      }
      if (heap.length > 0 && !this.closed) this.sleepUntil(heap[0]!.key)
    })
  }

  up(i: number) {
    const heap = this.heap
    const dog = heap[i]!
    while (i > 0) {
      const parent = (i - 1) >> 1
      const p = heap[parent]!
      if (p.key <= dog.key) break
      heap[i] = p
      p.index = i
      i = parent
    }
    heap[i] = dog
    dog.index = i
  }

  down(i: number) {
    const heap = this.heap
    const n = heap.length
    const dog = heap[i]!
    while (true) {
      const left = 2 * i + 1
      if (left >= n) break
      const right = left + 1
      const child = right < n && heap[right]!.key < heap[left]!.key ? right : left
      const c = heap[child]!
      if (c.key >= dog.key) break
      heap[i] = c
      c.index = i
      i = child
    }
    heap[i] = dog
    dog.index = i
  }
}

/** The deadline keeper of one server; its scope stops it. */
export const make: Effect.Effect<Deadlines, never, Scope.Scope> = Effect.gen(function*() {
  const clock = yield* Clock.Clock
  const keeper = new Keeper(clock, yield* Effect.context<never>())
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      keeper.closed = true
      keeper.sleeper?.interruptUnsafe()
    })
  )
  return { watchdog: () => new Dog(keeper) }
})
