/**
 * The encodings ESMTP parameters use to carry text that would otherwise break the
 * command line: xtext (RFC 3461 section 4) for ENVID, ORCPT and AUTH, and the
 * `\x{HEX}` forms of RFC 6533 for `ORCPT=utf-8;...`.
 *
 * Encoders only ever emit printable ASCII, so their output can never hold CR, LF
 * or NUL. Decoders return `undefined` for malformed input and never throw.
 *
 * @since 0.1.0
 */

const HEX = "0123456789ABCDEF"

/** The value of a hex digit of either case, or -1. */
const hexValue = (c: number): number =>
  c >= 48 && c <= 57 ? c - 48 : c >= 65 && c <= 70 ? c - 55 : c >= 97 && c <= 102 ? c - 87 : -1

const hexByte = (b: number): string => "+" + HEX[b >> 4]! + HEX[b & 15]!

/** Appends the UTF-8 octets of one code point; a lone surrogate becomes U+FFFD. */
const utf8Octets = (cp: number, out: Array<number>): void => {
  if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd
  if (cp < 0x80) out.push(cp)
  else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 63))
  else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63))
  else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63))
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** Decodes octets as UTF-8, `undefined` when they are not well-formed. */
const decodeUtf8 = (octets: ReadonlyArray<number>): string | undefined => {
  try {
    return strictUtf8.decode(Uint8Array.from(octets))
  } catch {
    return undefined
  }
}

/** xchar: printable ASCII except "+" and "=". */
const isXchar = (c: number) => c >= 33 && c <= 126 && c !== 43 && c !== 61

/**
 * xtext-encodes text: every character outside "!".."~", and "+" and "=", becomes
 * "+XX" per octet of its UTF-8 form.
 */
export const encode = (text: string): string => {
  let out = ""
  const octets: Array<number> = []
  for (const ch of text) {
    const c = ch.codePointAt(0)!
    if (isXchar(c)) {
      out += ch
      continue
    }
    octets.length = 0
    utf8Octets(c, octets)
    for (const b of octets) out += hexByte(b)
  }
  return out
}

/** The value of an upper-case hex digit, or -1. */
const upperHex = (c: number): number => (c >= 48 && c <= 57 ? c - 48 : c >= 65 && c <= 70 ? c - 55 : -1)

/**
 * Decodes xtext; `undefined` for anything but xchars and "+" followed by two
 * upper-case hex digits (RFC 3461 says upper case). The octets must be UTF-8.
 */
export const decode = (xtext: string): string | undefined => {
  const octets: Array<number> = []
  let ascii = true
  let out = ""
  for (let i = 0; i < xtext.length; i++) {
    const c = xtext.charCodeAt(i)
    if (isXchar(c)) {
      octets.push(c)
      out += xtext[i]
      continue
    }
    if (c !== 43) return undefined
    const hi = upperHex(xtext.charCodeAt(i + 1))
    const lo = upperHex(xtext.charCodeAt(i + 2))
    if (hi < 0 || lo < 0) return undefined
    const b = hi * 16 + lo
    if (b >= 0x80) ascii = false
    octets.push(b)
    out += String.fromCharCode(b)
    i += 2
  }
  return ascii ? out : decodeUtf8(octets)
}

/** QCHAR of RFC 6533: printable ASCII except "+", "=" and "\". */
const isQchar = (c: number) => c >= 33 && c <= 126 && c !== 43 && c !== 61 && c !== 92

/**
 * Encodes an address for `ORCPT=utf-8;...` as utf-8-addr-xtext (RFC 6533 section 3):
 * ASCII only, every other character as `\x{HEX}`. Safe for any server, SMTPUTF8 or not.
 */
export const encodeUtf8Address = (text: string): string => {
  let out = ""
  for (const ch of text) {
    const c = ch.codePointAt(0)!
    if (isQchar(c)) out += ch
    else {
      const hex = (c >= 0xd800 && c <= 0xdfff ? 0xfffd : c).toString(16).toUpperCase()
      out += "\\x{" + (hex.length < 2 ? "0" + hex : hex) + "}"
    }
  }
  return out
}

/**
 * The code point of an `\x{HEX}` escape, or -1. RFC 6533 allows only the shortest
 * form (two digits below 0x100, no leading zero otherwise), no NUL, no surrogates,
 * and below 0x80 only the characters that could not appear raw.
 */
const embeddedCodePoint = (digits: string): number => {
  if (digits.length < 2 || digits.length > 6) return -1
  let cp = 0
  for (let i = 0; i < digits.length; i++) {
    const v = hexValue(digits.charCodeAt(i))
    if (v < 0) return -1
    cp = cp * 16 + v
  }
  if (digits.length === 2) return cp === 0 || (cp < 0x80 && isQchar(cp)) ? -1 : cp
  if (digits.charCodeAt(0) === 48) return -1
  if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return -1
  return cp
}

/**
 * Decodes utf-8-addr-xtext or utf-8-addr-unitext (RFC 6533 section 3): QCHARs,
 * raw non-ASCII characters, and `\x{HEX}` escapes.
 */
export const decodeUtf8Address = (text: string): string | undefined => {
  let out = ""
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (isQchar(c)) {
      out += text[i]
    } else if (c === 92) {
      if (text.charCodeAt(i + 1) !== 120 || text.charCodeAt(i + 2) !== 123) return undefined
      let close = i + 3
      while (close < text.length && close < i + 10 && text.charCodeAt(close) !== 125) close++
      if (text.charCodeAt(close) !== 125) return undefined
      const cp = embeddedCodePoint(text.slice(i + 3, close))
      if (cp < 0) return undefined
      out += String.fromCodePoint(cp)
      i = close
    } else if (c >= 0xd800 && c <= 0xdbff) {
      const d = text.charCodeAt(i + 1)
      if (!(d >= 0xdc00 && d <= 0xdfff)) return undefined
      out += text.slice(i, i + 2)
      i++
    } else if (c >= 0x80 && !(c >= 0xdc00 && c <= 0xdfff)) {
      out += text[i]
    } else {
      return undefined
    }
  }
  return out
}
