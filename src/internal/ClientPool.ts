/**
 * A small pool of client connections for the Mailer: at most `size` in use at once,
 * warmest first, each closed after `maxUses` sends or `idleTimeout` unused, and discarded
 * (never reused) after a failure that broke it or an interruption.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"

export interface PoolOptions<C, E> {
  readonly size: number
  readonly maxUses: number
  readonly idleTimeout: Duration.Duration
  /** Opens a connection whose resources live in the given scope. */
  readonly open: Effect.Effect<C, E, Scope.Scope>
  /** Whether a connection can take another send. */
  readonly reusable: (connection: C) => boolean
}

export interface Pool<C, E> {
  /** Runs `f` with a connection; `reused` says it served an earlier send. */
  readonly use: <A, E2, R>(f: (connection: C, reused: boolean) => Effect.Effect<A, E2, R>) => Effect.Effect<A, E | E2, R>
  /** Connections open now, and how many of them are idle. */
  readonly stats: Effect.Effect<{ readonly open: number; readonly idle: number }>
}

interface Entry<C> {
  readonly connection: C
  readonly scope: Scope.Closeable
  uses: number
  timer: Fiber.Fiber<void> | undefined
}

export const make = <C, E>(options: PoolOptions<C, E>): Effect.Effect<Pool<C, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Scope.Scope
    const permits = yield* Semaphore.make(options.size)
    const idle: Array<Entry<C>> = []
    let open = 0
    let shuttingDown = false

    const close = (entry: Entry<C>) =>
      Effect.suspend(() => {
        open--
        return Scope.close(entry.scope, Exit.void)
      })

    const stopTimer = (entry: Entry<C>) =>
      Effect.suspend(() => {
        const timer = entry.timer
        entry.timer = undefined
        return timer === undefined ? Effect.void : Fiber.interrupt(timer)
      })

    const expire = (entry: Entry<C>) =>
      Effect.suspend(() => {
        const at = idle.indexOf(entry)
        if (at < 0) return Effect.void
        idle.splice(at, 1)
        entry.timer = undefined
        return close(entry)
      })

    const park = (entry: Entry<C>) =>
      Effect.gen(function*() {
        idle.push(entry)
        entry.timer = yield* Effect.forkIn(Effect.andThen(Effect.sleep(options.idleTimeout), expire(entry)), scope)
      })

    // Shutting down: idle connections say QUIT; those in use close with their scopes.
    yield* Scope.addFinalizer(
      scope,
      Effect.suspend(() => {
        shuttingDown = true
        const all = idle.splice(0)
        return Effect.forEach(all, (e) => Effect.andThen(stopTimer(e), close(e)), { discard: true })
      })
    )

    type Lease = readonly [entry: Entry<C>, reused: boolean]
    const acquire: Effect.Effect<Lease, E> = Effect.suspend((): Effect.Effect<Lease, E> => {
      const warm = idle.pop()
      if (warm !== undefined) return Effect.as(stopTimer(warm), [warm, true])
      return Effect.gen(function*() {
        const child = yield* Scope.fork(scope, "sequential")
        open++
        const connection = yield* options.open.pipe(
          Scope.provide(child),
          Effect.onError(() =>
            Effect.suspend(() => {
              open--
              return Scope.close(child, Exit.void)
            })
          )
        )
        const entry: Entry<C> = { connection, scope: child, uses: 0, timer: undefined }
        return [entry, false] as const
      })
    })

    const release = (entry: Entry<C>, exit: Exit.Exit<unknown, unknown>) =>
      Effect.suspend(() => {
        entry.uses++
        const keep = !shuttingDown && entry.uses < options.maxUses && options.reusable(entry.connection) &&
          !(Exit.isFailure(exit) && exit.cause.reasons.some((r) => r._tag === "Interrupt"))
        if (keep) return park(entry)
        // Gone from the pool at once; its QUIT takes a round trip the caller does not wait for.
        open--
        return Effect.asVoid(Effect.forkIn(Scope.close(entry.scope, Exit.void), scope))
      })

    const use = <A, E2, R>(f: (connection: C, reused: boolean) => Effect.Effect<A, E2, R>): Effect.Effect<A, E | E2, R> =>
      permits.withPermits(1)(Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const [entry, reused] = yield* restore(acquire)
          const exit = yield* Effect.exit(restore(f(entry.connection, reused)))
          yield* release(entry, exit)
          return yield* exit
        })
      ))

    return { use, stats: Effect.sync(() => ({ open, idle: idle.length })) }
  })
