/**
 * BDAT (RFC 3030): a message in one chunk is a body like DATA's; one in several is handed to the
 * backend as it comes, each chunk answered once the backend has taken it in.
 */
import type * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import type * as Command from "../../Command.ts"
import * as SmtpError from "../../SmtpError.ts"
import type { TransportError } from "../../Transport.ts"
import { DotDecoder } from "../codec/DotCodec.ts"
import type * as LineReader from "../codec/LineReader.ts"
import type { Conversation } from "./Conversation.ts"
import * as Mail from "./Mail.ts"
import type { Transaction } from "./Mail.ts"
import { isNegative } from "./Replies.ts"
import { Close, type Outcome, type Step, type Stop } from "./Step.ts"

/**
 * A message arriving in several BDAT chunks, handed to the backend as it comes. The backend's
 * stream is pulled here, so a chunk is answered only once the backend has taken all of it in
 * (asked for more) or has finished: a backend failure is the reply to the chunk it failed on.
 */
export interface Bdat {
  readonly queue: Queue.Queue<Uint8Array, SmtpError.SmtpError | TransportError | Cause.Done>
  fiber: Fiber.Fiber<ReadonlyArray<string>>
  /** Message bytes handed over so far. */
  bytes: number
  /** Slices offered, and taken by the backend. */
  offered: number
  taken: number
  /** The backend asked for more with every slice offered taken. */
  hungry: boolean
  /** The backend's `data` (or `lmtpData`) has finished. */
  ended: boolean
  /** The chunk's reply waits for `hungry` or `ended`. */
  waiter: Deferred.Deferred<void> | undefined
}

const wakeBdat = (b: Bdat) => {
  const w = b.waiter
  b.waiter = undefined
  if (w !== undefined) Deferred.doneUnsafe(w, Effect.void)
}

export function abortBdat(t: Transaction | undefined): Effect.Effect<void> {
  return t?.bdat === undefined ? Effect.void : Effect.andThen(Queue.shutdown(t.bdat.queue), Fiber.interrupt(t.bdat.fiber))
}

export function bdat(self: Conversation, cmd: Command.Bdat): Step {
  const r = self.r
  const c = self.c
  // Without CHUNKING what follows is raw content that would run as commands: hang up.
  if (!c.extensions.chunking || !self.extended) return Effect.fail(new Close(r.bdatNotNegotiated))
  const max = c.maxMessageBytes > 0 ? c.maxMessageBytes : Number.POSITIVE_INFINITY
  const t = self.tx
  const usable = t !== undefined && t.rcpts.length > 0
  // A chunk that cannot fit is never read (it could be gigabytes): told at once, then closed.
  if (cmd.size > max - (usable ? t.chunked : 0)) return Effect.fail(new Close(r.bdatTooLarge))
  // The announced bytes are read whatever the verdict: they are not commands.
  if (!usable) {
    const reply = t === undefined ? r.mailFirst : r.rcptFirst
    return Effect.as(self.reader.chunkBody(cmd.size, { deadline: self.bodyDeadline, maxBytes: Number.POSITIVE_INFINITY }).drain, reply)
  }
  t.chunked += cmd.size
  const text = textChunk(self, t, cmd.last)
  // A message in one chunk (the usual small message) is a body like DATA's.
  if (t.bdat === undefined && cmd.last) {
    return Mail.receive(self, t, self.reader.chunkBody(cmd.size, { deadline: self.bodyDeadline, maxBytes: max }, text), "BDAT")
  }
  return chunk(self, t, cmd, max, text)
}

/** The line rules for a BDAT chunk of `t`: none for BINARYMIME, nor when there are none to apply. */
function textChunk(self: Conversation, t: Transaction, last: boolean): LineReader.TextChunk | undefined {
  const c = self.c
  if (t.options.body === "BINARYMIME") return undefined
  if (c.bareLineEndings === "allow" && c.maxBodyLineLength === Number.POSITIVE_INFINITY) return undefined
  t.text ??= new DotDecoder(c.bareLineEndings, { stuffing: false, maxLineLength: c.maxBodyLineLength })
  return { decoder: t.text, last, lineTooLong: self.r.bodyLineTooLong }
}

/** Starts handing a message in several chunks to the backend. */
function startChunks(self: Conversation, t: Transaction): Effect.Effect<Bdat> {
  return Effect.gen(function*() {
    const queue = yield* Queue.bounded<Uint8Array, SmtpError.SmtpError | TransportError | Cause.Done>(4)
    const b: Bdat = {
      queue,
      fiber: undefined as unknown as Fiber.Fiber<ReadonlyArray<string>>,
      bytes: 0,
      offered: 0,
      taken: 0,
      hungry: false,
      ended: false,
      waiter: undefined
    }
    const pull = Effect.suspend(() => {
      if (b.taken === b.offered) {
        b.hungry = true
        wakeBdat(b)
      }
      return Effect.map(Queue.takeAll(queue), (slices) => {
        b.taken += slices.length
        return slices
      })
    })
    b.fiber = yield* Mail.deliver(self, t, Stream.fromPull(Effect.succeed(pull)), "BDAT").pipe(
      // Once the backend is done, offers return false and the chunk's reply need not wait.
      Effect.ensuring(Effect.andThen(
        Queue.shutdown(queue),
        Effect.sync(() => {
          b.ended = true
          wakeBdat(b)
        })
      )),
      Effect.forkChild({ startImmediately: true })
    )
    t.bdat = b
    return b
  })
}

/**
 * Once the backend has taken in every slice offered, or has finished. Checked as the wait
 * starts, not before: the fiber may yield in between, and the backend catch up meanwhile.
 */
function caughtUp(b: Bdat): Effect.Effect<void> {
  return Effect.suspend(() => {
    if (b.hungry || b.ended) return Effect.void
    const waiter = Deferred.makeUnsafe<void>()
    b.waiter = waiter
    return Deferred.await(waiter)
  })
}

/** One chunk of a message in several. */
function chunk(self: Conversation, t: Transaction, cmd: Command.Bdat, max: number, text: LineReader.TextChunk | undefined): Effect.Effect<Outcome, Stop> {
  return Effect.gen(function*() {
    const b = t.bdat ?? (yield* startChunks(self, t))
    const chunk = self.reader.chunkBody(cmd.size, { deadline: self.bodyDeadline, maxBytes: Number.POSITIVE_INFINITY }, text)
    let tooLarge = false
    yield* chunk.stream.pipe(
      Stream.runForEach((slice) => {
        if (tooLarge) return Effect.void
        b.bytes += slice.length
        // (Sizes were checked as announced; normalised line endings can still add a few bytes.)
        if (b.bytes > max) {
          tooLarge = true
          return Effect.void
        }
        b.offered++
        b.hungry = false
        return Queue.offer(b.queue, slice)
      }),
      Effect.catchTag("SmtpError", () => Effect.void) // the chunk's own verdict, seen below
    )
    yield* chunk.drain
    const violation = tooLarge ? SmtpError.dataTooLarge : chunk.violation()
    if (violation !== undefined) {
      // The backend's stream fails, so nothing is stored; the body's verdict is the reply.
      yield* Queue.fail(b.queue, violation)
      yield* Fiber.join(b.fiber)
      return yield* cmd.last
        ? Mail.finishMessage(self, t, [], violation, b.bytes)
        : Mail.abandonMessage(self, self.r.error(violation), b.bytes)
    }
    if (cmd.last) {
      yield* Queue.end(b.queue)
      return yield* Mail.finishMessage(self, t, yield* Fiber.join(b.fiber), undefined, b.bytes)
    }
    yield* caughtUp(b)
    if (b.ended) {
      const replies = yield* Fiber.join(b.fiber)
      // A backend that failed is answered at this chunk; one that succeeded early, at LAST.
      if (replies.every(isNegative)) return yield* Mail.abandonMessage(self, replies[0]!, b.bytes)
    }
    return self.r.format(250, [2, 0, 0], `${cmd.size} octets received`)
  })
}
