/**
 * SASLprep (RFC 4013), through `@mongodb-js/saslprep`: the stringprep tables (Unicode 3.2
 * unassigned code points, bidi classes) are too large to keep here.
 */
import saslprepImpl from "@mongodb-js/saslprep"

/**
 * Prepares a string as a query (unassigned code points allowed, as RFC 5802's Normalize
 * says); `undefined` when it holds prohibited characters or breaks the bidi rule.
 */
export const saslprep = (s: string): string | undefined => {
  // Fast path: printable ASCII is unchanged by SASLprep.
  if (/^[\x20-\x7e]*$/.test(s)) return s
  try {
    return saslprepImpl(s, { allowUnassigned: true })
  } catch {
    return undefined
  }
}
