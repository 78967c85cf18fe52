/**
 * IP addresses and networks for trust decisions (PROXY protocol sources, XCLIENT clients):
 * a list of addresses and CIDR networks, and whether a peer's address is in it. Parsing is
 * ipaddr.js's, strict: IPv4 only in four-part decimal, an IPv4-mapped IPv6 address counts as
 * its IPv4 address.
 */
import ipaddr from "ipaddr.js"
import * as Result from "effect/Result"

type Ip = ipaddr.IPv4 | ipaddr.IPv6

/** A listening address that stands for every interface ("" is Node's own for it). */
export const isWildcardHost = (host: string): boolean => host === "0.0.0.0" || host === "::" || host === ""

export const isIPv4 = (s: string): boolean => ipaddr.IPv4.isValidFourPartDecimal(s)

export const isIPv6 = (s: string): boolean => !s.includes("%") && ipaddr.IPv6.isValid(s)

/** The one spelling of an IPv4 or IPv6 address: dotted quad, or RFC 5952 (as Node reports peers). */
export const normalize = (s: string): string => {
  const bytes = toBytes(s)
  return bytes === undefined ? s : fromBytes(bytes)
}

/** An address, with an IPv4-mapped IPv6 address as its IPv4 address; undefined if it is none. */
const parseIp = (s: string): Ip | undefined => {
  if (isIPv4(s)) return ipaddr.IPv4.parse(s)
  if (!isIPv6(s)) return undefined
  const v6 = ipaddr.IPv6.parse(s)
  return v6.isIPv4MappedAddress() ? v6.toIPv4Address() : v6
}

/** The text of a 4- or 16-byte address: dotted quad, or RFC 5952 IPv6. */
export const fromBytes = (bytes: Uint8Array): string => {
  const ip = ipaddr.fromByteArray(Array.from(bytes))
  return ip.kind() === "ipv6" ? (ip as ipaddr.IPv6).toRFC5952String() : ip.toString()
}

/** The 4 or 16 bytes of an address; undefined if it is not one. */
export const toBytes = (s: string): Uint8Array | undefined => {
  if (isIPv4(s)) return Uint8Array.from(ipaddr.IPv4.parse(s).toByteArray())
  return isIPv6(s) ? Uint8Array.from(ipaddr.IPv6.parse(s).toByteArray()) : undefined
}

/** A set of addresses and networks. */
export interface Networks {
  /** Whether this address (IPv4 or IPv6 text) is in one of the networks. */
  readonly contains: (address: string) => boolean
}

/**
 * Parses addresses (`192.0.2.1`, `2001:db8::1`) and CIDR networks (`10.0.0.0/8`, `fd00::/8`).
 * An IPv4 network also holds the IPv4-mapped IPv6 addresses of its members.
 */
export const parse = (entries: ReadonlyArray<string>): Result.Result<Networks, string> => {
  const ranges: Array<[Ip, number]> = []
  for (const entry of entries) {
    const slash = entry.indexOf("/")
    const address = parseIp(slash < 0 ? entry : entry.slice(0, slash))
    const bits = address === undefined ? 0 : address.kind() === "ipv4" ? 32 : 128
    const prefix = slash < 0 ? bits : /^\d{1,3}$/.test(entry.slice(slash + 1)) ? Number(entry.slice(slash + 1)) : -1
    if (address === undefined || prefix < 0 || prefix > bits) {
      return Result.fail(`"${entry}" is not an IP address or a network such as 10.0.0.0/8 or fd00::/8`)
    }
    ranges.push([address, prefix])
  }
  return Result.succeed({
    contains: (s) => {
      const ip = parseIp(s)
      if (ip === undefined) return false
      for (const [range, prefix] of ranges) {
        if (range.kind() === ip.kind() && ip.match(range, prefix)) return true
      }
      return false
    }
  })
}
