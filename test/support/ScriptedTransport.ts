/**
 * A tiny `Transport` for tests: `read` hands out a scripted list of chunks, `write`
 * records what was written. A step may wait (virtual time, see `TestClock`) before its
 * chunk arrives; when the script runs out, a read blocks until the test pushes more or
 * ends it. Reads are counted, so backpressure and timeouts can be observed.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { type Transport, TransportError } from "../../src/Transport.ts"

/**
 * A chunk (a string is one byte per char, latin1), or a chunk that arrives `after` a delay
 * counted from when it is read.
 */
export type Step = string | Uint8Array | { readonly after: Duration.Input; readonly chunk: string | Uint8Array }

export interface ScriptedTransport extends Transport {
  /** Queues more steps and releases a blocked read. */
  readonly push: (...steps: ReadonlyArray<Step>) => void
  /** After the queued steps, reads return `undefined` (end of stream) and a blocked read is released. */
  readonly end: () => void
  /** How many times `read` was called. */
  readonly reads: () => number
  /** Whether a read is in progress (blocked, or waiting for a step's delay). */
  readonly reading: () => boolean
  /** Waits until a read is blocked for want of steps, i.e. until `push` or `end` (at once if one is). */
  readonly awaitBlocked: Effect.Effect<void>
  /** Steps not handed out yet. */
  readonly remaining: () => number
  /** Every byte written (strings are written as UTF-8), one char per byte. */
  readonly written: () => string
  readonly closed: () => boolean
}

/** A step whose chunk arrives `duration` after it is read. */
export const after = (duration: Duration.Input, chunk: string | Uint8Array): Step => ({ after: duration, chunk })

const bytes = (chunk: string | Uint8Array): Uint8Array =>
  typeof chunk === "string" ? Uint8Array.from(chunk, (c) => c.charCodeAt(0)) : chunk

/** Makes a transport over `script`; with `end: true` (the default) reads past it return end of stream. */
export const make = (
  script: ReadonlyArray<Step>,
  options: { readonly end?: boolean } = {}
): ScriptedTransport => {
  const steps: Array<Step> = [...script]
  let ended = options.end ?? true
  let reads = 0
  let reading = false
  let closed = false
  const writes: Array<Uint8Array> = []
  let wakeReader: (() => void) | undefined
  let blockedWaiters: Array<() => void> = []

  const release = () => {
    const wake = wakeReader
    wakeReader = undefined
    wake?.()
  }

  const next: Effect.Effect<Uint8Array | undefined> = Effect.suspend(() => {
    const step = steps[0]
    if (step === undefined) {
      if (ended) return Effect.succeed(undefined)
      return Effect.callback<void>((resume) => {
        wakeReader = () => resume(Effect.void)
        const waiters = blockedWaiters
        blockedWaiters = []
        for (const w of waiters) w()
        return Effect.sync(() => {
          wakeReader = undefined
        })
      }).pipe(Effect.andThen(next))
    }
    if (typeof step === "string" || step instanceof Uint8Array) {
      steps.shift()
      return Effect.succeed(bytes(step))
    }
    // The step is taken only once its delay has passed: an interrupted read leaves it queued.
    return Effect.sleep(step.after).pipe(Effect.map(() => {
      steps.shift()
      return bytes(step.chunk)
    }))
  })

  const read: Effect.Effect<Uint8Array | undefined, TransportError> = Effect.suspend(() => {
    if (reading) return Effect.die(new Error("ScriptedTransport: two reads pending at once"))
    if (closed) return Effect.fail(new TransportError({ reason: "Closed", message: "closed locally" }))
    reads++
    reading = true
    return Effect.ensuring(
      next,
      Effect.sync(() => {
        reading = false
      })
    )
  })

  const awaitBlocked: Effect.Effect<void> = Effect.suspend(() =>
    wakeReader !== undefined ? Effect.void : Effect.callback<void>((resume) => {
      const w = () => resume(Effect.void)
      blockedWaiters.push(w)
      return Effect.sync(() => {
        blockedWaiters = blockedWaiters.filter((x) => x !== w)
      })
    })
  )

  return {
    read,
    write: (data) =>
      Effect.sync(() => {
        writes.push(typeof data === "string" ? new TextEncoder().encode(data) : data.slice())
      }),
    writeUnsafe: (data) => {
      writes.push(typeof data === "string" ? new TextEncoder().encode(data) : data.slice())
      return Effect.void
    },
    upgradeTls: () => Effect.fail(new TransportError({ reason: "Tls", message: "ScriptedTransport has no TLS" })),
    tls: () => undefined,
    localEndpoint: undefined,
    remoteEndpoint: undefined,
    close: Effect.sync(() => {
      closed = true
    }),
    push: (...more) => {
      steps.push(...more)
      release()
    },
    end: () => {
      ended = true
      release()
    },
    reads: () => reads,
    reading: () => reading,
    awaitBlocked,
    remaining: () => steps.length,
    written: () => Buffer.concat(writes).toString("latin1"),
    closed: () => closed
  }
}
