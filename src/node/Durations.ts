/** Durations as people type them on a command line or in a query string. */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import * as Result from "effect/Result"

/** "30s", "5m", "1h", "250ms", "90" (seconds) or Effect's "30 seconds". */
export const parse = (text: string): Result.Result<Duration.Duration, string> => {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(text.trim())
  if (m !== null) {
    const n = Number(m[1])
    const unit = m[2] ?? "s"
    const ms = unit === "ms" ? n : unit === "s" ? n * 1000 : unit === "m" ? n * 60_000 : n * 3_600_000
    return Result.succeed(Duration.millis(ms))
  }
  const d = Duration.fromInput(text as Duration.Input)
  return Option.isSome(d) ? Result.succeed(d.value) : Result.fail(`invalid duration "${text}": use e.g. 30s, 5m, 250ms`)
}
