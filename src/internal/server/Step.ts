/**
 * What a command handler gives back: the reply to queue now, or the Effect that yields it once
 * something has been waited for; and why a conversation stops early.
 */
import type * as Effect from "effect/Effect"
import type { TransportError } from "../../Transport.ts"
import type { LineTooLong } from "../codec/LineReader.ts"

/** Why the conversation ends early; the reply (if any) is sent before closing. */
export class Close {
  readonly reply: string | undefined
  constructor(reply: string | undefined) {
    this.reply = reply
  }
}

export type Stop = Close | TransportError | LineTooLong

/** A handler's outcome: the reply to queue (or none), now or once the Effect is done. */
export type Outcome = string | undefined
export type Step = Outcome | Effect.Effect<Outcome, Stop>
