/**
 * RFC 3463 enhanced status codes ("5.1.1"), as a Schema.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/** `[class, subject, detail]`: class is 2, 4 or 5; subject and detail are 0-999. */
export const EnhancedCode = Schema.Tuple([
  Schema.Literals([2, 4, 5]),
  Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 999 })),
  Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 999 }))
])
export type EnhancedCode = typeof EnhancedCode.Type

const pattern = /^([245])\.(\d{1,3})\.(\d{1,3})$/

/** Parses "X.Y.Z"; `undefined` when the text is not an enhanced code. */
export const parse = (text: string): EnhancedCode | undefined => {
  const m = pattern.exec(text)
  if (m === null) return undefined
  return [Number(m[1]) as 2 | 4 | 5, Number(m[2]), Number(m[3])]
}

/** Formats as "X.Y.Z". */
export const format = (code: EnhancedCode): string => `${code[0]}.${code[1]}.${code[2]}`

/** The enhanced code a server uses when a reply has none of its own: class from the reply code, then ".0.0". */
export const defaultFor = (replyCode: number): EnhancedCode | undefined => {
  const cls = Math.floor(replyCode / 100)
  return cls === 2 || cls === 4 || cls === 5 ? [cls, 0, 0] : undefined
}
