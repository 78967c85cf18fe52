/**
 * One operation at a time on a client connection, in call order, with what happens when an
 * operation ends in the same step that frees the lock.
 *
 * A `Semaphore`'s `withPermits` followed by an `onError` takes nine steps of the fiber's run
 * loop per operation and a dozen closures; this is one `onExit`. The lock is taken in the
 * operation's first step inside the `onExit`, so whatever interrupts it afterwards still runs
 * the finalizer (uninterruptibly), which frees the lock if it was taken.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"

export class OperationLock {
  private held = false
  /** Operations waiting for their turn, oldest first: each takes the lock when woken. */
  private readonly queue: Array<() => void> = []

  /**
   * Runs `body` once it holds the lock. `ended` runs when `body` is over, before the lock is
   * freed; not for an operation interrupted before its turn came, which did nothing.
   *
   * The Effect may be run any number of times, even at once (`client.noop` is one Effect):
   * each run has a state of its own.
   */
  run<A, E, R>(
    body: () => Effect.Effect<A, E, R>,
    ended: (exit: Exit.Exit<A, E>) => Effect.Effect<void> | undefined
  ): Effect.Effect<A, E, R> {
    return Effect.suspend(() => {
      let mine = false // this run holds the lock
      let started = false
      const start = () => {
        started = true
        return body()
      }
      return Effect.onExit(
        Effect.suspend(() => {
          if (this.take()) {
            mine = true
            return start()
          }
          return Effect.flatMap(
            Effect.callback<void>((resume) => {
              // Checked again: the fiber may have yielded since the check above, and the
              // holder freed the lock meanwhile with nobody in the queue to wake.
              if (this.take()) {
                mine = true
                return resume(Effect.void)
              }
              const wake = () => {
                // The lock passes to this run as it is woken, so that an interruption
                // before it runs still frees it.
                mine = true
                // Resumed later, not inside the finalizer of the operation that woke it.
                resume(Effect.yieldNow)
              }
              this.queue.push(wake)
              return Effect.sync(() => {
                const at = this.queue.indexOf(wake)
                if (at >= 0) this.queue.splice(at, 1)
              })
            }),
            start
          )
        }),
        (exit) => {
          if (!mine) return Exit.void
          const after = started ? ended(exit) : undefined
          if (after === undefined) {
            this.release()
            return Exit.void
          }
          return Effect.ensuring(after, Effect.sync(() => this.release()))
        }
      )
    })
  }

  /** Runs `body` holding the lock if no operation holds it; otherwise does nothing. */
  ifFree(body: Effect.Effect<void>): Effect.Effect<void> {
    return Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        if (!this.take()) return Effect.void
        return Effect.ensuring(restore(body), Effect.sync(() => this.release()))
      })
    )
  }

  /** Takes the lock if it is free. */
  private take(): boolean {
    if (this.held) return false
    this.held = true
    return true
  }

  private release() {
    const next = this.queue.shift()
    if (next === undefined) this.held = false
    else next()
  }
}
