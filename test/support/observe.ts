/**
 * Instruments for tests: a Clock that counts the sleeps asked of it, a tracer that records the
 * spans that end, and reading a transport up to a line end.
 */
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Tracer from "effect/Tracer"
import type { Transport } from "../../src/Transport.ts"

/** `clock`, counting every `sleep` in `counter.sleeps`. */
export const countingSleeps = (clock: Clock.Clock, counter: { sleeps: number }): Clock.Clock => ({
  ...clock,
  currentTimeMillisUnsafe: () => clock.currentTimeMillisUnsafe(),
  currentTimeNanosUnsafe: () => clock.currentTimeNanosUnsafe(),
  monotonicTimeNanosUnsafe: () => clock.monotonicTimeNanosUnsafe(),
  sleep: (d) => {
    counter.sleeps++
    return clock.sleep(d)
  }
})

/** A tracer whose spans push their name to `ended` as they end. */
export const recordingTracer = (ended: Array<string>): Tracer.Tracer =>
  Tracer.make({
    span: (options) => {
      const span = new Tracer.NativeSpan(options)
      const end = span.end.bind(span)
      span.end = (endTime, exit) => {
        ended.push(span.name)
        end(endTime, exit)
      }
      return span
    }
  })

/** Reads until a chunk ends with CRLF: enough for one-line exchanges. */
export const readLine = (t: Transport) =>
  Effect.gen(function*() {
    let s = ""
    while (!s.endsWith("\r\n")) {
      const c = yield* t.read
      if (c === undefined) break
      s += new TextDecoder().decode(c)
    }
    return s
  })
