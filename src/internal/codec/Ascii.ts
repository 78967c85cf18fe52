/**
 * ASCII-only case folding for protocol words (verbs, keywords, parameter values). JavaScript's
 * `toUpperCase` maps some non-ASCII letters onto ASCII ("ſ" becomes "S"), which would let a
 * non-ASCII word pass for a verb or a keyword.
 */

export const isAsciiLower = (c: number): boolean => c >= 97 && c <= 122

/** `s` with a-z upper-cased and every other character kept; `s` itself when nothing changes. */
export const asciiUpper = (s: string): string => {
  // Clients nearly always send protocol words in upper case already: then nothing is built.
  let i = 0
  while (i < s.length && !isAsciiLower(s.charCodeAt(i))) i++
  if (i === s.length) return s
  let out = s.slice(0, i)
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i)
    out += isAsciiLower(c) ? String.fromCharCode(c - 32) : s[i]
  }
  return out
}
