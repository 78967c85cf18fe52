/**
 * Running swaks (the "Swiss Army Knife for SMTP") and reading its transcript.
 */
import type * as Effect from "effect/Effect"
import { type ProcessError, run, type RunResult } from "./process.ts"

/** One line of a swaks transcript: what it sent, what it received, or its own remarks. */
export interface TranscriptLine {
  readonly kind: "sent" | "received" | "info" | "error"
  /** Whether the line travelled over TLS. */
  readonly tls: boolean
  readonly text: string
}

// swaks prefixes every line with a hint: " -> " sent, "<-  " received, "<** " received
// error; "~" in place of "-" (and "<~* ") when the line went over TLS; "===" and "***"
// are its own information and errors.
const hints: ReadonlyArray<readonly [string, TranscriptLine["kind"], boolean]> = [
  [" -> ", "sent", false],
  [" ~> ", "sent", true],
  ["<-  ", "received", false],
  ["<~  ", "received", true],
  ["<** ", "received", false],
  ["<~* ", "received", true],
  ["=== ", "info", false],
  ["*** ", "error", false]
]

export const transcript = (stdout: string): ReadonlyArray<TranscriptLine> =>
  stdout.split("\n").flatMap((line) => {
    const hint = hints.find(([prefix]) => line.startsWith(prefix))
    return hint === undefined ? [] : [{ kind: hint[1], tls: hint[2], text: line.slice(hint[0].length) }]
  })

/** The replies swaks received, as text ("250 2.1.0 Sender OK"). */
export const replies = (stdout: string): ReadonlyArray<string> =>
  transcript(stdout).filter((l) => l.kind === "received").map((l) => l.text)

/** Runs swaks against 127.0.0.1:`port` with a fixed sender, HELO name and a 15 s timeout. */
export const swaks = (port: number, args: ReadonlyArray<string>): Effect.Effect<RunResult, ProcessError> =>
  run("swaks", [
    "--server",
    `127.0.0.1:${port}`,
    "--helo",
    "client.test",
    "--from",
    "sender@example.org",
    "--timeout",
    "15s",
    ...args
  ])
