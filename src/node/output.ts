/** Output and errors shared by the command-line commands. */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"

/** A bad flag or argument: printed on stderr, exit code 2. */
export class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

/** Writes to stdout, waiting for the pipe to take it (events must not be lost on exit). */
export const writeStdout = (text: string): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    process.stdout.write(text, () => resume(Effect.void))
  })

export const writeStderr = (text: string): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    process.stderr.write(text, () => resume(Effect.void))
  })
