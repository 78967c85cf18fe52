/**
 * Maildir delivery for the dev mail server: each message is written under `tmp/`, flushed
 * to disk, then renamed into `new/`, so a reader never sees half a message and a message is
 * acknowledged only once it is durable.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"

export class MaildirError extends Data.TaggedError("MaildirError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

export interface Delivered {
  readonly id: string
  readonly path: string
  readonly bytes: number
}

const attempt = <A>(message: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (cause) => new MaildirError({ message, cause }) })

/** Creates `dir/{tmp,new,cur}` if missing. */
export const ensure = (dir: string): Effect.Effect<void, MaildirError> =>
  Effect.forEach(["tmp", "new", "cur"], (sub) =>
    attempt(`cannot create ${path.join(dir, sub)}`, () => fs.mkdir(path.join(dir, sub), { recursive: true })), {
    discard: true
  })

let counter = 0
const hostname = os.hostname().replace(/[/:]/g, "_")

/** A name unique to this delivery (the Maildir convention: time, process and counter, host). */
const uniqueName = () => {
  const now = Date.now()
  return `${Math.floor(now / 1000)}.M${(now % 1000) * 1000}P${process.pid}Q${++counter}.${hostname}`
}

/** Closes a file handle; a close that fails changes nothing for data already synced, or given up. */
const close = (h: fs.FileHandle) => Effect.promise(() => h.close().catch(() => undefined))

/** Removes a file if it is there; a failure to (a folder gone, or a file where one was) is no news. */
const remove = (file: string) => Effect.promise(() => fs.rm(file, { force: true }).catch(() => undefined))

const fsyncDir = (dir: string) =>
  Effect.acquireUseRelease(
    attempt(`cannot open ${dir}`, () => fs.open(dir, "r")),
    (h) => attempt(`cannot sync ${dir}`, () => h.sync()),
    close
  )

/**
 * Writes the body to `dir/new/<id>`, exactly the bytes of the stream. Fails (and leaves no file)
 * if the stream fails or the disk does: a Maildir gone or not writable, a file where a folder
 * belongs, a full disk. Every such failure is a `MaildirError`, never a defect.
 */
export const deliver = <E>(dir: string, body: Stream.Stream<Uint8Array, E>): Effect.Effect<Delivered, E | MaildirError> =>
  Effect.gen(function*() {
    const id = uniqueName()
    const tmp = path.join(dir, "tmp", id)
    const final = path.join(dir, "new", id)
    const written = yield* Effect.acquireUseRelease(
      attempt(`cannot create ${tmp}`, () => fs.open(tmp, "wx", 0o600)),
      (handle) =>
        Effect.gen(function*() {
          let bytes = 0
          yield* Stream.runForEach(body, (chunk) => {
            bytes += chunk.length
            return attempt(`cannot write ${tmp}`, () => handle.write(chunk))
          })
          yield* attempt(`cannot sync ${tmp}`, () => handle.sync())
          return bytes
        }),
      close
    ).pipe(Effect.tap(attempt(`cannot move ${tmp} to new/`, () => fs.rename(tmp, final))))
      // Failed, refused or interrupted (shutdown): no half-written file is left in tmp/.
      .pipe(Effect.onExit((exit) => exit._tag === "Success" ? Effect.void : remove(tmp)))
    // Not durable until new/ is synced: then it is not acknowledged either, and not left behind.
    yield* fsyncDir(path.join(dir, "new")).pipe(Effect.tapError(() => remove(final)))
    return { id, path: final, bytes: written }
  })
