/**
 * Postfix's smtp-sink as a server for effect-smtp's client: it listens on a Unix socket in
 * the test's scratch directory, dumps every transaction to a file (envelope records, then
 * the message with its dots unstuffed and CRLF turned into LF) and counts sessions and
 * messages.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import type { Scratch } from "./files.ts"
import { daemon, type ProcessError } from "./process.ts"

/** One transaction as smtp-sink dumped it. */
interface SinkMessage {
  readonly proto: string
  readonly helo: string | undefined
  /** The arguments of MAIL: "<from> PARAM=…". */
  readonly mail: string
  /** The arguments of each RCPT, in order. */
  readonly rcpts: ReadonlyArray<string>
  /** The message as received, with LF line endings. */
  readonly content: string
}

interface Counters {
  readonly sessions: number
  readonly quits: number
  readonly messages: number
}

export interface Sink {
  readonly socket: string
  /**
   * Waits for smtp-sink to exit (it stops after the client's session), then reads what it
   * counted and dumped.
   */
  readonly finished: Effect.Effect<{ readonly counters: Counters; readonly messages: ReadonlyArray<SinkMessage> }, ProcessError>
}

const parseDump = (text: string): SinkMessage => {
  const lines = text.split("\n")
  const field = (name: string) => lines.filter((l) => l.startsWith(`${name}: `)).map((l) => l.slice(name.length + 2))
  // The generated header ends with smtp-sink's three-line Received: header.
  const received = lines.findIndex((l) => l.startsWith("Received: "))
  // After the message, smtp-sink writes one empty line.
  const content = lines.slice(received + 3).join("\n")
  return {
    proto: field("X-Client-Proto")[0] ?? "",
    helo: field("X-Helo-Args")[0],
    mail: field("X-Mail-Args")[0] ?? "",
    rcpts: field("X-Rcpt-Args"),
    content: content.endsWith("\n\n") ? content.slice(0, -1) : content
  }
}

const parseCounters = (stdout: string): Counters => {
  // -c rewrites one line with CR: "sess=1 quit=1 mesg=1\r".
  const last = stdout.split("\r").map((s) => s.trim()).filter((s) => s !== "").at(-1) ?? ""
  const n = (key: string) => Number(new RegExp(`${key}=(\\d+)`).exec(last)?.[1] ?? NaN)
  return { sessions: n("sess"), quits: n("quit"), messages: n("mesg") }
}

/**
 * Starts smtp-sink for one client session. `args` are extra
 * options: `-p` no PIPELINING, `-L` LMTP, `-r RCPT` soft-reject, `-Q DATA` 421…
 */
export const start = (
  files: Scratch,
  args: ReadonlyArray<string> = []
): Effect.Effect<Sink, ProcessError, Scope.Scope> =>
  Effect.gen(function*() {
    const socket = files.path("sink.sock")
    const dumps = files.path("dump")
    fs.mkdirSync(dumps, { mode: 0o777 })
    // Run as root it must drop privileges (-u), and then write its dumps as that user.
    const asRoot = process.getuid?.() === 0
    if (asRoot) {
      fs.chmodSync(files.dir, 0o755)
      fs.chmodSync(dumps, 0o777)
    }
    const sink = yield* daemon("/usr/sbin/smtp-sink", [
      ...(asRoot ? ["-u", "nobody"] : []),
      "-c",
      "-h",
      "sink.test",
      "-d",
      `${dumps}/m.`,
      // Exit after the client's session, so that everything is written when it has.
      "-n",
      "1",
      ...args,
      `unix:${socket}`,
      "16"
    ])
    yield* sink.listening(socket)
    return {
      socket,
      finished: Effect.map(sink.exited(), (r) => ({
        counters: parseCounters(r.stdout),
        messages: fs.readdirSync(dumps).map((name) => parseDump(fs.readFileSync(`${dumps}/${name}`, "latin1")))
      }))
    }
  })
