/**
 * The inbox's view of the Maildir the dev server writes: an index of every message in `new/` and
 * `cur/` (read at start, so a restart keeps the mail), the SMTP envelope of each delivery, and a
 * feed of changes for live pages and for tests that wait for a message.
 *
 * The envelope is not part of a Maildir message, so it is kept beside it, in
 * `MAILDIR/envelopes/<id>.json`. Messages without one (delivered by another program, or while the
 * inbox was off) show their header addresses instead.
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { MaildirError } from "../Maildir.ts"
import * as Mime from "./Mime.ts"

/** The SMTP envelope of a delivery, as the dev server reported it. */
const Envelope = Schema.Struct({
  from: Schema.String,
  to: Schema.Array(Schema.String),
  helo: Schema.NullOr(Schema.String),
  tls: Schema.Boolean,
  auth: Schema.NullOr(Schema.String),
  body: Schema.String,
  smtputf8: Schema.Boolean
})
type Envelope = typeof Envelope.Type

const EnvelopeFile = Schema.fromJsonString(Envelope)

interface AttachmentSummary {
  readonly index: number
  readonly filename: string | null
  readonly mimeType: string
  readonly size: number
  readonly related: boolean
}

/** One line of the inbox. */
export interface Summary {
  readonly id: string
  /** When the message was stored (ISO 8601). */
  readonly receivedAt: string
  /** Bytes as stored. */
  readonly size: number
  /** MAIL FROM and the accepted RCPT TOs, when known. */
  readonly envelope: { readonly from: string; readonly to: ReadonlyArray<string> } | null
  readonly from: Mime.Mailbox | null
  readonly to: ReadonlyArray<Mime.Mailbox>
  readonly cc: ReadonlyArray<Mime.Mailbox>
  readonly subject: string
  readonly date: string | null
  readonly attachments: ReadonlyArray<AttachmentSummary>
  readonly snippet: string
  readonly problems: ReadonlyArray<string>
}

export type Change =
  | { readonly type: "received"; readonly message: Summary }
  | { readonly type: "deleted"; readonly id: string }
  | { readonly type: "cleared" }

/**
 * A search. `from` and `to` are whole addresses (case does not matter), matched against the
 * envelope and the From, To, Cc and Bcc headers; `subject` and `q` are substrings, `q` of any of
 * the sender, the recipients and the subject.
 */
export interface Filter {
  readonly from?: string | undefined
  readonly to?: string | undefined
  readonly subject?: string | undefined
  readonly q?: string | undefined
}

export class MessageNotFound extends Data.TaggedError("MessageNotFound")<{ readonly id: string }> {
  override get message() {
    return `no message with id "${this.id}"`
  }
}

export interface Opened {
  readonly summary: Summary
  readonly envelope: Envelope | null
  readonly parsed: Mime.Parsed
}

/** What the dev server tells the store after each delivery (its `received` event). */
export interface Delivery extends Envelope {
  readonly id: string
  readonly path: string
}

export class MessageStore extends Context.Service<MessageStore, {
  /** Matching messages, newest first. */
  readonly list: (filter: Filter) => Effect.Effect<ReadonlyArray<Summary>>
  readonly size: Effect.Effect<number>
  /** The exact stored bytes. */
  readonly raw: (id: string) => Effect.Effect<Uint8Array, MessageNotFound | MaildirError>
  /** The message parsed (the last few are cached). */
  readonly open: (id: string) => Effect.Effect<Opened, MessageNotFound | MaildirError>
  readonly remove: (id: string) => Effect.Effect<void, MessageNotFound | MaildirError>
  /** Deletes every message; returns how many there were. */
  readonly clear: Effect.Effect<number, MaildirError>
  /** Indexes a message the dev server has just stored. Never fails: the message is safe on disk already. */
  readonly record: (delivery: Delivery) => Effect.Effect<void>
  /** A feed of changes from now on, for as long as the scope lasts. */
  readonly subscribe: Effect.Effect<PubSub.Subscription<Change>, never, Scope.Scope>
  /** The oldest matching message, or the first one to arrive within `timeout`. */
  readonly waitFor: (filter: Filter, timeout: Duration.Duration) => Effect.Effect<Option.Option<Summary>>
}>()("effect-smtp/inbox/MessageStore") {}

interface Entry {
  readonly summary: Summary
  readonly envelope: Envelope | null
  /** Where the file is now: `new/<id>` or `cur/<id>:2,FLAGS`. */
  path: string
  readonly order: number
}

const attempt = <A>(message: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (cause) => new MaildirError({ message, cause }) })

const isMissing = (e: MaildirError) => (e.cause as NodeJS.ErrnoException | undefined)?.code === "ENOENT"

/** The id of a Maildir file name: everything before the `:2,` info. Hidden files are not messages. */
const idOf = (name: string): string | undefined => name.startsWith(".") ? undefined : name.split(":", 1)[0]

const lower = (s: string | undefined) => s === undefined || s === "" ? undefined : s.toLowerCase()

const matcher = (filter: Filter) => {
  const from = lower(filter.from)
  const to = lower(filter.to)
  const subject = lower(filter.subject)
  const q = lower(filter.q)
  return (s: Summary): boolean => {
    const senders = [s.envelope?.from ?? "", s.from?.address ?? ""].map((a) => a.toLowerCase())
    const recipients = [...(s.envelope?.to ?? []), ...[...s.to, ...s.cc].map((m) => m.address)].map((a) => a.toLowerCase())
    if (from !== undefined && !senders.includes(from)) return false
    if (to !== undefined && !recipients.includes(to)) return false
    if (subject !== undefined && !s.subject.toLowerCase().includes(subject)) return false
    if (q !== undefined) {
      const names = [s.from?.name ?? "", ...[...s.to, ...s.cc].map((m) => m.name)].map((n) => n.toLowerCase())
      const haystack = [...senders, ...recipients, ...names, s.subject.toLowerCase()]
      if (!haystack.some((h) => h.includes(q))) return false
    }
    return true
  }
}

const summarize = (id: string, stat: { mtime: Date; size: number }, envelope: Envelope | null, message: Mime.Message): Summary => ({
  id,
  receivedAt: stat.mtime.toISOString(),
  size: stat.size,
  envelope: envelope === null ? null : { from: envelope.from, to: envelope.to },
  from: message.from,
  to: message.to,
  cc: message.cc,
  subject: message.subject,
  date: message.date,
  attachments: message.attachments.map((a) => ({
    index: a.index,
    filename: a.filename,
    mimeType: a.mimeType,
    size: a.size,
    related: a.related
  })),
  snippet: Mime.snippet(message),
  problems: message.problems
})

/**
 * Parsed messages kept in memory, since viewing one reads it several times (the message, its
 * HTML, an attachment): the last few, and only small ones, so that big mail costs a re-parse
 * rather than memory held for good.
 */
const cachedMessages = 4
const cachedMessageBytes = 4 * 1024 * 1024

const make = (maildir: string): Effect.Effect<MessageStore["Service"], MaildirError, Scope.Scope> =>
  Effect.gen(function*() {
    const envelopes = path.join(maildir, "envelopes")
    yield* attempt(`cannot create ${envelopes}`, () => fs.mkdir(envelopes, { recursive: true }))
    const changes = yield* Effect.acquireRelease(PubSub.unbounded<Change>(), PubSub.shutdown)
    const index = new Map<string, Entry>()
    const cache = new Map<string, Mime.Parsed>()
    let order = 0

    const envelopeFile = (id: string) => path.join(envelopes, `${id}.json`)

    const readEnvelope = (id: string) =>
      Effect.tryPromise(() => fs.readFile(envelopeFile(id), "utf8")).pipe(
        Effect.flatMap(Schema.decodeUnknownEffect(EnvelopeFile)),
        Effect.orElseSucceed(() => null)
      )

    const read = (entry: Entry) => attempt(`cannot read ${entry.path}`, () => fs.readFile(entry.path))

    /** Reads, parses and indexes one file. */
    const load = (id: string, file: string, envelope: Envelope | null) =>
      Effect.gen(function*() {
        const stat = yield* attempt(`cannot stat ${file}`, () => fs.stat(file))
        const bytes = yield* attempt(`cannot read ${file}`, () => fs.readFile(file))
        const parsed = yield* Mime.parse(bytes)
        const entry: Entry = { summary: summarize(id, stat, envelope, parsed.message), envelope, path: file, order: order++ }
        return { entry, parsed, mtime: stat.mtimeMs }
      })

    const remember = (id: string, size: number, parsed: Mime.Parsed) => {
      cache.delete(id)
      if (size > cachedMessageBytes) return
      cache.set(id, parsed)
      for (const key of cache.keys()) {
        if (cache.size <= cachedMessages) break
        cache.delete(key)
      }
    }

    const forget = (id: string) => {
      index.delete(id)
      cache.delete(id)
    }

    /** Every message file in new/ and cur/, by id. */
    const scan = Effect.gen(function*() {
      const found = new Map<string, string>()
      for (const sub of ["new", "cur"]) {
        const dir = path.join(maildir, sub)
        const names = yield* attempt(`cannot list ${dir}`, () => fs.readdir(dir, { withFileTypes: true })).pipe(
          Effect.catchIf(isMissing, () => Effect.succeed([]))
        )
        for (const d of names) {
          const id = d.isFile() ? idOf(d.name) : undefined
          if (id !== undefined && !found.has(id)) found.set(id, path.join(dir, d.name))
        }
      }
      return found
    })

    // The index at start: oldest first, so that `order` follows arrival among equal times.
    const loaded = yield* Effect.forEach(
      yield* scan,
      ([id, file]) =>
        Effect.flatMap(readEnvelope(id), (envelope) => load(id, file, envelope)).pipe(
          Effect.map(Option.some),
          Effect.catch((e) => Effect.as(Effect.logWarning(`inbox: skipping ${file}: ${e.message}`), Option.none()))
        ),
      { concurrency: 2 }
    )
    loaded.flatMap((l) => Option.isSome(l) ? [l.value] : [])
      .sort((a, b) => a.mtime - b.mtime || (a.entry.path < b.entry.path ? -1 : 1))
      .forEach(({ entry }) => index.set(entry.summary.id, { ...entry, order: order++ }))

    const newestFirst = () =>
      [...index.values()].sort((a, b) =>
        b.summary.receivedAt.localeCompare(a.summary.receivedAt) || b.order - a.order
      )

    const entryOf = (id: string) =>
      Effect.suspend(() => {
        const entry = index.get(id)
        return entry === undefined ? Effect.fail(new MessageNotFound({ id })) : Effect.succeed(entry)
      })

    /** Reads a message, following it if a mail program moved it from new/ to cur/. */
    const readEntry = (entry: Entry) =>
      read(entry).pipe(
        Effect.catchIf(isMissing, () =>
          Effect.gen(function*() {
            const moved = (yield* scan).get(entry.summary.id)
            if (moved === undefined) {
              forget(entry.summary.id)
              yield* PubSub.publish(changes, { type: "deleted", id: entry.summary.id })
              return yield* new MessageNotFound({ id: entry.summary.id })
            }
            entry.path = moved
            return yield* read(entry)
          }))
      )

    const unlink = (file: string) =>
      attempt(`cannot delete ${file}`, () => fs.rm(file, { force: true }))

    const remove = (id: string) =>
      Effect.gen(function*() {
        const entry = yield* entryOf(id)
        yield* unlink(entry.path)
        const moved = (yield* scan).get(id) // a copy moved to cur/ meanwhile
        if (moved !== undefined) yield* unlink(moved)
        yield* unlink(envelopeFile(id))
        forget(id)
        yield* PubSub.publish(changes, { type: "deleted", id })
      })

    const clear = Effect.gen(function*() {
      const files = yield* scan
      const count = Math.max(files.size, index.size)
      yield* Effect.forEach([...files], ([id, file]) => Effect.andThen(unlink(file), unlink(envelopeFile(id))), {
        concurrency: 4,
        discard: true
      })
      index.clear()
      cache.clear()
      yield* PubSub.publish(changes, { type: "cleared" })
      return count
    })

    const record = (d: Delivery) => {
      const envelope: Envelope = {
        from: d.from,
        to: d.to,
        helo: d.helo,
        tls: d.tls,
        auth: d.auth,
        body: d.body,
        smtputf8: d.smtputf8
      }
      return attempt(`cannot write ${envelopeFile(d.id)}`, () => fs.writeFile(envelopeFile(d.id), JSON.stringify(envelope))).pipe(
        Effect.andThen(load(d.id, d.path, envelope)),
        Effect.tap(({ entry, parsed }) =>
          Effect.sync(() => {
            index.set(d.id, entry)
            remember(d.id, entry.summary.size, parsed)
          })
        ),
        Effect.flatMap(({ entry }) => PubSub.publish(changes, { type: "received", message: entry.summary })),
        Effect.catch((e) => Effect.logWarning(`inbox: cannot index ${d.path}: ${e.message}`)),
        Effect.asVoid
      )
    }

    const open = (id: string) =>
      Effect.gen(function*() {
        const entry = yield* entryOf(id)
        let parsed = cache.get(id)
        if (parsed === undefined) {
          parsed = yield* Mime.parse(yield* readEntry(entry))
        }
        remember(id, entry.summary.size, parsed)
        return { summary: entry.summary, envelope: entry.envelope, parsed }
      })

    const waitFor = (filter: Filter, timeout: Duration.Duration) =>
      Effect.scoped(Effect.gen(function*() {
        const matches = matcher(filter)
        // Subscribe before looking, so that nothing arriving in between is missed.
        const subscription = yield* PubSub.subscribe(changes)
        const present = newestFirst().reverse().find((e) => matches(e.summary))
        if (present !== undefined) return Option.some(present.summary)
        const next: Effect.Effect<Summary> = Effect.flatMap(PubSub.take(subscription), (change) =>
          change.type === "received" && matches(change.message) ? Effect.succeed(change.message) : next)
        return yield* Effect.timeoutOption(next, timeout)
      }))

    return MessageStore.of({
      list: (filter) => Effect.sync(() => newestFirst().map((e) => e.summary).filter(matcher(filter))),
      size: Effect.sync(() => index.size),
      raw: (id) => Effect.flatMap(entryOf(id), readEntry),
      open,
      remove,
      clear,
      record,
      subscribe: PubSub.subscribe(changes),
      waitFor
    })
  })

export const layer = (maildir: string): Layer.Layer<MessageStore, MaildirError> => Layer.effect(MessageStore, make(maildir))
