/**
 * The JSON API, for the page and for tests: list and search, one message parsed, its exact
 * bytes, its attachments, deletion, and `/api/wait`, which answers once a matching message is
 * there. Every error is `{"error": "…"}` with a fitting status: 400 for a bad parameter, 404 for
 * no such message (or nothing arrived in time), 500 when the Maildir cannot be read.
 */
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import type { MaildirError } from "../Maildir.ts"
import * as Durations from "../Durations.ts"
import { Stopping } from "./Events.ts"
import * as MessageHtml from "./MessageHtml.ts"
import { type MessageNotFound, MessageStore, type Opened } from "./MessageStore.ts"

/** The server's listeners as its `listening` events reported them (the page shows where to send mail). */
export class Listeners extends Context.Service<Listeners, {
  readonly current: () => ReadonlyArray<{ readonly address: string; readonly protocol: string; readonly tls: string }>
}>()("effect-smtp/inbox/Listeners") {}

const json = (body: unknown, status = 200) => HttpServerResponse.jsonUnsafe(body, { status })
const problem = (status: number, error: string) => json({ error }, status)

/** The API's failures as responses. */
const answer = <R>(
  effect: Effect.Effect<HttpServerResponse.HttpServerResponse, MessageNotFound | MaildirError | Schema.SchemaError, R>
) =>
  effect.pipe(Effect.catch((e) => {
    switch (e._tag) {
      case "MessageNotFound":
        return Effect.succeed(problem(404, e.message))
      case "SchemaError":
        return Effect.succeed(problem(400, `bad parameter: ${e.message}`))
      case "MaildirError":
        return Effect.as(Effect.logError(`inbox: ${e.message}`, e.cause), problem(500, e.message))
    }
  }))

const optionalText = Schema.optional(Schema.String)
const search = { from: optionalText, to: optionalText, subject: optionalText, q: optionalText }
const count = (minimum: number, maximum: number) =>
  Schema.optional(Schema.FiniteFromString.check(Schema.isInt(), Schema.isBetween({ minimum, maximum })))

const ListQuery = Schema.Struct({ ...search, limit: count(1, 1000), offset: count(0, Number.MAX_SAFE_INTEGER) })
const WaitQuery = Schema.Struct({ ...search, timeout: optionalText })
const MessageParams = Schema.Struct({ id: Schema.String })
const AttachmentParams = Schema.Struct({ id: Schema.String, index: Schema.FiniteFromString.check(Schema.isInt()) })
const HtmlQuery = Schema.Struct({ id: Schema.String, remote: optionalText })

const waitDefault = Duration.seconds(10)
const waitLongest = Duration.minutes(5)

const messagePath = (id: string) => `/api/messages/${encodeURIComponent(id)}`

/** One message as the API shows it: the summary, plus everything needed to read it. */
const detail = ({ envelope, parsed: { message }, summary }: Opened) => ({
  ...summary,
  envelope,
  messageId: message.messageId,
  replyTo: message.replyTo,
  bcc: message.bcc,
  headers: message.headers,
  text: message.text,
  html: message.html,
  remoteContent: message.html !== null && MessageHtml.hasRemoteContent(message.html),
  attachments: message.attachments.map((a) => ({ ...a, url: `${messagePath(summary.id)}/attachments/${a.index}` }))
})

/** `attachment; filename=…` with an ASCII fallback and the exact name (RFC 6266). */
const attachment = (filename: string) => {
  const ascii = filename.replace(/[^\x20-\x7e]|["\\%]/g, "_")
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename)}`
}

/** Served bytes never run as a page of the inbox's origin, whatever their type. */
const inert = { "content-security-policy": "default-src 'none'; sandbox" }

const safeType = (type: string) => /^[a-z0-9.+-]+\/[a-z0-9.+-]+$/i.test(type) ? type : "application/octet-stream"

export const routes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const store = yield* MessageStore
  const stopping = yield* Stopping
  const listeners = yield* Listeners

  yield* router.add("GET", "/api/server", Effect.sync(() => json({ listeners: listeners.current() })))

  yield* router.add(
    "GET",
    "/api/messages",
    answer(Effect.gen(function*() {
      const query = yield* HttpRouter.schemaParams(ListQuery)
      const all = yield* store.list(query)
      const offset = query.offset ?? 0
      return json({
        total: yield* store.size,
        count: all.length,
        messages: all.slice(offset, offset + (query.limit ?? 100))
      })
    }))
  )

  yield* router.add(
    "DELETE",
    "/api/messages",
    answer(Effect.map(store.clear, (deleted) => json({ deleted })))
  )

  yield* router.add(
    "GET",
    "/api/messages/:id",
    answer(Effect.gen(function*() {
      const { id } = yield* HttpRouter.schemaPathParams(MessageParams)
      return json(detail(yield* store.open(id)))
    }))
  )

  yield* router.add(
    "DELETE",
    "/api/messages/:id",
    answer(Effect.gen(function*() {
      const { id } = yield* HttpRouter.schemaPathParams(MessageParams)
      yield* store.remove(id)
      return HttpServerResponse.empty()
    }))
  )

  yield* router.add(
    "GET",
    "/api/messages/:id/raw",
    answer(Effect.gen(function*() {
      const { id } = yield* HttpRouter.schemaPathParams(MessageParams)
      return HttpServerResponse.uint8Array(yield* store.raw(id), {
        contentType: "text/plain; charset=utf-8",
        headers: inert
      })
    }))
  )

  yield* router.add(
    "GET",
    "/api/messages/:id/download",
    answer(Effect.gen(function*() {
      const { id } = yield* HttpRouter.schemaPathParams(MessageParams)
      const raw = yield* store.raw(id)
      const { summary } = yield* store.open(id)
      const name = (summary.subject.replace(/[\x00-\x1f\x7f/\\:*?"<>|]+/g, " ").trim().slice(0, 80) || id) + ".eml"
      return HttpServerResponse.uint8Array(raw, {
        contentType: "message/rfc822",
        headers: { ...inert, "content-disposition": attachment(name) }
      })
    }))
  )

  yield* router.add(
    "GET",
    "/api/messages/:id/html",
    answer(Effect.gen(function*() {
      const { id, remote } = yield* HttpRouter.schemaParams(HtmlQuery)
      const opened = yield* store.open(id)
      const html = opened.parsed.message.html
      if (html === null) return problem(404, `message "${id}" has no HTML part`)
      return HttpServerResponse.text(MessageHtml.document(html, opened.parsed), {
        contentType: "text/html; charset=utf-8",
        headers: { "content-security-policy": MessageHtml.contentSecurityPolicy(remote === "1" || remote === "true") }
      })
    }))
  )

  yield* router.add(
    "GET",
    "/api/messages/:id/attachments/:index",
    answer(Effect.gen(function*() {
      const { id, index } = yield* HttpRouter.schemaPathParams(AttachmentParams)
      const { parsed } = yield* store.open(id)
      const part = parsed.message.attachments[index]
      const content = parsed.content(index)
      if (part === undefined || content === undefined) return problem(404, `message "${id}" has no attachment ${index}`)
      return HttpServerResponse.uint8Array(content, {
        contentType: safeType(part.mimeType),
        headers: { ...inert, "content-disposition": attachment(part.filename ?? `attachment-${index}`) }
      })
    }))
  )

  yield* router.add(
    "GET",
    "/api/wait",
    answer(Effect.gen(function*() {
      const query = yield* HttpRouter.schemaParams(WaitQuery)
      let timeout = waitDefault
      if (query.timeout !== undefined) {
        const parsed = Durations.parse(query.timeout)
        if (Result.isFailure(parsed)) return problem(400, `bad parameter: ${parsed.failure}`)
        if (Duration.isGreaterThan(parsed.success, waitLongest)) return problem(400, "bad parameter: timeout is at most 5m")
        timeout = parsed.success
      }
      const found = yield* store.waitFor(query, timeout).pipe(
        Effect.raceFirst(Effect.as(Deferred.await(stopping), undefined))
      )
      if (found === undefined) return problem(503, "the server is shutting down")
      if (Option.isNone(found)) {
        const what = Object.entries(query).filter(([k, v]) => k !== "timeout" && v !== undefined)
          .map(([k, v]) => `${k}=${v}`).join(", ")
        return problem(404, `no message${what === "" ? "" : ` matching ${what}`} within ${Duration.format(timeout)}`)
      }
      return json(detail(yield* store.open(found.value.id)))
    }))
  )

  yield* router.add("*", "/api/*", Effect.succeed(problem(404, "no such endpoint")))
}))

