/** The wire trace (the `trace` option): every command and reply, logged at Debug. */
import * as Effect from "effect/Effect"

/** A trace entry: "C" or "S", then the text. */
export const traceLog = (entry: string) =>
  Effect.logDebug(entry.slice(1)).pipe(Effect.annotateLogs("smtp", entry[0]!))

/** An AUTH command line as the trace shows it: its initial response redacted. */
export const redactAuth = (line: string): string => {
  if (!/^auth[ \t]/i.test(line)) return line
  const m = /^(\S+[ \t]+\S+)[ \t]+\S/.exec(line)
  return m === null ? line : `${m[1]} <redacted>`
}
