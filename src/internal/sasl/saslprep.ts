/**
 * SASLprep (RFC 4013), through `@mongodb-js/saslprep`: the stringprep tables (Unicode 3.2
 * unassigned code points, bidi classes) are too large to keep here. They cost a server about
 * 6 MiB of memory, so they are loaded the first time a string that is not printable ASCII
 * needs preparing; most never are.
 */
import * as Effect from "effect/Effect"

type Impl = (s: string, options: { readonly allowUnassigned: boolean }) => string

let loaded: Impl | undefined
const load: Effect.Effect<Impl> = Effect.suspend(() =>
  loaded !== undefined
    ? Effect.succeed(loaded)
    : Effect.map(Effect.promise(() => import("@mongodb-js/saslprep")), (m) => (loaded = m.default as Impl))
)

/**
 * Prepares a string as a query (unassigned code points allowed, as RFC 5802's Normalize
 * says); `undefined` when it holds prohibited characters or breaks the bidi rule.
 */
export const saslprep = (s: string): Effect.Effect<string | undefined> => {
  // Fast path: printable ASCII is unchanged by SASLprep.
  if (/^[\x20-\x7e]*$/.test(s)) return Effect.succeed(s)
  return Effect.map(load, (impl) => {
    try {
      return impl(s, { allowUnassigned: true })
    } catch {
      return undefined
    }
  })
}
