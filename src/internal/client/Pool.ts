/**
 * A small pool of client connections for the Mailer: at most `size` in use at once,
 * warmest first, each closed after `maxUses` sends or `idleTimeout` unused, and discarded
 * (never reused) after a failure that broke it or an interruption.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
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
  /** When it was last parked (the Clock's milliseconds). */
  idleSince: number
}

export const make = <C, E>(options: PoolOptions<C, E>): Effect.Effect<Pool<C, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Scope.Scope
    const clock = yield* Clock.Clock
    const permits = yield* Semaphore.make(options.size)
    const idleMs = Duration.toMillis(options.idleTimeout)
    // Warmest last: a send takes the connection parked most recently; the oldest is first.
    const idle: Array<Entry<C>> = []
    let open = 0
    let shuttingDown = false
    let sweeping = false

    const close = (entry: Entry<C>) =>
      Effect.suspend(() => {
        open--
        return Scope.close(entry.scope, Exit.void)
      })

    /**
     * One sleeper per pool closes connections left idle for `idleTimeout` (rather than a timer
     * per parked connection, started and stopped on every send). It sleeps until the oldest
     * idle connection expires, closes what has expired, and stops once none is idle.
     */
    const sweep: Effect.Effect<void> = Effect.suspend(() => {
      if (shuttingDown || idle.length === 0) {
        sweeping = false
        return Effect.void
      }
      const wait = idle[0]!.idleSince + idleMs - clock.currentTimeMillisUnsafe()
      if (wait > 0) return Effect.andThen(clock.sleep(Duration.millis(wait)), sweep)
      return Effect.andThen(close(idle.shift()!), sweep)
    })

    const park = (entry: Entry<C>): Effect.Effect<void> => {
      entry.idleSince = clock.currentTimeMillisUnsafe()
      idle.push(entry)
      if (sweeping || idleMs === Infinity) return Effect.void
      sweeping = true
      return Effect.asVoid(Effect.forkIn(sweep, scope))
    }

    // Shutting down: idle connections say QUIT; those in use close with their scopes.
    yield* Scope.addFinalizer(
      scope,
      Effect.suspend(() => {
        shuttingDown = true
        const all = idle.splice(0)
        return Effect.forEach(all, close, { discard: true })
      })
    )

    type Lease = readonly [entry: Entry<C>, reused: boolean]
    const openOne: Effect.Effect<Lease, E> = Effect.suspend(() => {
      const child = Scope.forkUnsafe(scope, "sequential")
      open++
      return options.open.pipe(
        Scope.provide(child),
        Effect.map((connection): Lease => [{ connection, scope: child, uses: 0, idleSince: 0 }, false]),
        Effect.onError(() =>
          Effect.suspend(() => {
            open--
            return Scope.close(child, Exit.void)
          })
        )
      )
    })
    const acquire: Effect.Effect<Lease, E> = Effect.suspend(() => {
      const warm = idle.pop()
      return warm !== undefined ? Exit.succeed([warm, true] as const) : openOne
    })

    const release = (entry: Entry<C>, exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> => {
      entry.uses++
      const keep = !shuttingDown && entry.uses < options.maxUses && options.reusable(entry.connection) &&
        !(Exit.isFailure(exit) && Cause.hasInterrupts(exit.cause))
      if (keep) return park(entry)
      // Gone from the pool at once; its QUIT takes a round trip the caller does not wait for.
      open--
      return Effect.asVoid(Effect.forkIn(Scope.close(entry.scope, Exit.void), scope))
    }

    const use = <A, E2, R>(f: (connection: C, reused: boolean) => Effect.Effect<A, E2, R>): Effect.Effect<A, E | E2, R> =>
      permits.withPermits(1)(Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(acquire), ([entry, reused]) =>
          Effect.flatMap(Effect.exit(restore(f(entry.connection, reused))), (exit) =>
            Effect.andThen(Effect.suspend(() => release(entry, exit)), exit)))
      ))

    return { use, stats: Effect.sync(() => ({ open, idle: idle.length })) }
  })
