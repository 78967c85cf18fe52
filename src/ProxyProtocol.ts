/**
 * The PROXY protocol (HAProxy's, versions 1 and 2): the header a TCP proxy or load balancer
 * sends first on each connection it opens to a backend, saying which client it is for.
 *
 * `parse` reads a header from the bytes a connection started with; `format` writes one (for
 * tests, or a proxy of your own). A listener takes headers with the `proxyProtocol` option of
 * `ListenOptions` / `ListenSpec`: only from trusted sources, within a timeout. What it read is
 * `Transport.proxy` and `ConnectionInfo.proxy`; the client's address becomes the connection's
 * `remoteEndpoint`.
 *
 * Version 2 TLVs are parsed and exposed: every TLV raw in `tlvs`, and the standard ones decoded
 * (ALPN, authority, unique ID, SSL). A CRC32C TLV is checked: a header whose checksum does not
 * match is invalid.
 *
 * @since 0.1.0
 */
import * as IpNetworks from "./internal/transport/IpNetworks.ts"
import type { Endpoint } from "./Transport.ts"

/** One type-length-value field of a version 2 header. */
export interface Tlv {
  /** The type byte; the standard ones are in `TLV`. */
  readonly type: number
  /** The value, as sent. */
  readonly value: Uint8Array
}

/** The SSL TLV (`PP2_TYPE_SSL`): what the proxy knows about the client's TLS connection to it. */
export interface SslInfo {
  /** The client connected over SSL/TLS (`PP2_CLIENT_SSL`). */
  readonly ssl: boolean
  /** The client presented a certificate on this connection (`PP2_CLIENT_CERT_CONN`). */
  readonly clientCertificate: boolean
  /** The client certificate was verified (`verify` is 0) — meaningful only with a certificate. */
  readonly verified: boolean
  /** `PP2_SUBTYPE_SSL_VERSION`: the TLS version, e.g. "TLSv1.3". */
  readonly version?: string | undefined
  /** `PP2_SUBTYPE_SSL_CN`: the client certificate's Common Name. */
  readonly commonName?: string | undefined
  /** `PP2_SUBTYPE_SSL_CIPHER`: the cipher suite, e.g. "ECDHE-RSA-AES128-GCM-SHA256". */
  readonly cipher?: string | undefined
  /** `PP2_SUBTYPE_SSL_SIG_ALG`: the certificate's signature algorithm, e.g. "SHA256". */
  readonly signatureAlgorithm?: string | undefined
  /** `PP2_SUBTYPE_SSL_KEY_ALG`: the certificate's key algorithm, e.g. "RSA2048". */
  readonly keyAlgorithm?: string | undefined
}

/** A parsed header. */
export interface Header {
  /** 1: the text line; 2: the binary header. */
  readonly version: 1 | 2
  /**
   * "proxy": a connection for a client; "local": the proxy's own (a health check), whose
   * addresses are the connection's real ones.
   */
  readonly command: "proxy" | "local"
  /** The client, as the proxy saw it; undefined for "local", v1 UNKNOWN and v2 UNSPEC. */
  readonly source: Endpoint | undefined
  /** The address the client connected to at the proxy. */
  readonly destination: Endpoint | undefined
  /** Every TLV, in order (version 2; empty for version 1). */
  readonly tlvs: ReadonlyArray<Tlv>
  /** `PP2_TYPE_ALPN`: the application protocol the client negotiated with the proxy. */
  readonly alpn?: string | undefined
  /** `PP2_TYPE_AUTHORITY`: the host name the client asked for (SNI). */
  readonly authority?: string | undefined
  /** `PP2_TYPE_UNIQUE_ID`: the proxy's identifier of the connection. */
  readonly uniqueId?: Uint8Array | undefined
  /** `PP2_TYPE_SSL`: the client's TLS connection to the proxy. */
  readonly ssl?: SslInfo | undefined
}

/** A header and who sent it, as a connection carries it. */
export interface ProxyInfo {
  /** The header, parsed. */
  readonly header: Header
  /** The proxy: the peer that opened the connection and sent the header. */
  readonly proxy: Endpoint | undefined
}

/** What the first bytes of a connection are. */
export type ParseResult =
  | {
    /** Too few bytes yet: read more and parse again. */
    readonly _tag: "Incomplete"
  }
  | {
    /** A whole header. */
    readonly _tag: "Complete"
    /** The header. */
    readonly header: Header
    /** Bytes the header took: what follows is the client's. */
    readonly length: number
  }
  | {
    /** Not a header, or a broken one: close the connection. */
    readonly _tag: "Invalid"
    /** What is wrong, for the log. */
    readonly reason: string
  }

/** The version 2 signature: "\r\n\r\n\0\r\nQUIT\n". */
export const SIGNATURE_V2: Uint8Array = Uint8Array.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a)
const V1_PREFIX = Uint8Array.from("PROXY ", (c) => c.charCodeAt(0))
/** A version 1 line is at most 107 bytes, CRLF included. */
export const MAX_V1_LENGTH = 107
/** A version 2 header is at most 16 + 65535 bytes. */
export const MAX_V2_LENGTH = 16 + 0xffff

/** The TLV types of the specification, by name (`PP2_TYPE_ALPN` is `TLV.ALPN`). */
export const TLV = {
  /** The application protocol (ALPN) the client negotiated. */
  ALPN: 0x01,
  /** The host name the client asked for. */
  AUTHORITY: 0x02,
  /** A CRC32C checksum of the whole header. */
  CRC32C: 0x03,
  /** Padding, to be ignored. */
  NOOP: 0x04,
  /** An opaque identifier of the connection, up to 128 bytes. */
  UNIQUE_ID: 0x05,
  /** The client's TLS connection: flags, verification, and the SSL sub-TLVs. */
  SSL: 0x20,
  /** SSL sub-TLV: the TLS version. */
  SSL_VERSION: 0x21,
  /** SSL sub-TLV: the client certificate's Common Name. */
  SSL_CN: 0x22,
  /** SSL sub-TLV: the cipher suite. */
  SSL_CIPHER: 0x23,
  /** SSL sub-TLV: the certificate's signature algorithm. */
  SSL_SIG_ALG: 0x24,
  /** SSL sub-TLV: the certificate's key algorithm. */
  SSL_KEY_ALG: 0x25,
  /** The network namespace the connection came from. */
  NETNS: 0x30
} as const

const incomplete: ParseResult = { _tag: "Incomplete" }
const invalid = (reason: string): ParseResult => ({ _tag: "Invalid", reason })

/** Whether `bytes` starts like `prefix` as far as both go. */
const agreesWith = (bytes: Uint8Array, prefix: Uint8Array) => {
  const n = Math.min(bytes.length, prefix.length)
  for (let i = 0; i < n; i++) if (bytes[i] !== prefix[i]) return false
  return true
}

/**
 * Reads a header from the start of a connection. `Incomplete` while the bytes so far could
 * still become one; `Invalid` as soon as they cannot (a client that is not a proxy is caught at
 * its first byte).
 */
export const parse = (bytes: Uint8Array): ParseResult => {
  if (bytes.length === 0) return incomplete
  if (agreesWith(bytes, SIGNATURE_V2)) return bytes.length < 16 ? incomplete : parseV2(bytes)
  if (agreesWith(bytes, V1_PREFIX)) return bytes.length < V1_PREFIX.length ? incomplete : parseV1(bytes)
  return invalid("not a PROXY protocol header")
}

// ---------------------------------------------------------------------------------------------
// Version 1: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n"

const isPort = (s: string) => /^(?:0|[1-9]\d{0,4})$/.test(s) && Number(s) <= 65535

const parseV1 = (bytes: Uint8Array): ParseResult => {
  // The CR is at most at index 105: the line with its CRLF is at most 107 bytes.
  const limit = Math.min(bytes.length, MAX_V1_LENGTH - 1)
  let end = -1
  for (let i = V1_PREFIX.length; i < limit; i++) {
    const c = bytes[i]!
    if (c === 0x0d) {
      if (i + 1 >= bytes.length) return incomplete
      if (bytes[i + 1] !== 0x0a) return invalid("version 1 header: CR without LF")
      end = i
      break
    }
    if (c < 0x20 || c > 0x7e) return invalid("version 1 header: a byte that is not printable ASCII")
  }
  if (end < 0) return bytes.length < MAX_V1_LENGTH - 1 ? incomplete : invalid("version 1 header longer than 107 bytes")
  const line = String.fromCharCode(...bytes.subarray(0, end))
  const length = end + 2
  const parts = line.split(" ")
  const family = parts[1]
  if (family === "UNKNOWN") {
    // The proxy cannot tell: the rest of the line is to be ignored, the real endpoints used.
    return { _tag: "Complete", length, header: { version: 1, command: "proxy", source: undefined, destination: undefined, tlvs: [] } }
  }
  if (family !== "TCP4" && family !== "TCP6") return invalid(`version 1 header: unknown protocol "${family ?? ""}"`)
  if (parts.length !== 6) return invalid("version 1 header: expected PROXY, protocol, two addresses and two ports")
  const [, , src, dst, srcPort, dstPort] = parts as [string, string, string, string, string, string]
  const valid = family === "TCP4" ? IpNetworks.isIPv4 : IpNetworks.isIPv6
  if (!valid(src) || !valid(dst)) return invalid(`version 1 header: invalid ${family === "TCP4" ? "IPv4" : "IPv6"} address`)
  if (!isPort(srcPort) || !isPort(dstPort)) return invalid("version 1 header: invalid port")
  return {
    _tag: "Complete",
    length,
    header: {
      version: 1,
      command: "proxy",
      source: { _tag: "Tcp", host: normalize(src), port: Number(srcPort) },
      destination: { _tag: "Tcp", host: normalize(dst), port: Number(dstPort) },
      tlvs: []
    }
  }
}

const normalize = IpNetworks.normalize

// ---------------------------------------------------------------------------------------------
// Version 2: signature, version and command, family and transport, length, addresses, TLVs

const AF_UNSPEC = 0
const AF_INET = 1
const AF_INET6 = 2
const AF_UNIX = 3
const addressLength = [0, 12, 36, 216] as const

const latin1 = new TextDecoder("latin1")
const utf8 = new TextDecoder("utf-8")

const u16 = (b: Uint8Array, i: number) => (b[i]! << 8) | b[i + 1]!
const u32 = (b: Uint8Array, i: number) => ((b[i]! << 24) >>> 0) + (b[i + 1]! << 16) + (b[i + 2]! << 8) + b[i + 3]!

const unixPath = (b: Uint8Array): string => {
  const nul = b.indexOf(0)
  return utf8.decode(nul < 0 ? b : b.subarray(0, nul))
}

/** TLVs in `b`, or the reason they are malformed. */
const parseTlvs = (b: Uint8Array): Array<Tlv> | string => {
  const out: Array<Tlv> = []
  let i = 0
  while (i < b.length) {
    if (i + 3 > b.length) return "a truncated TLV"
    const length = u16(b, i + 1)
    if (i + 3 + length > b.length) return "a TLV longer than the header"
    out.push({ type: b[i]!, value: b.subarray(i + 3, i + 3 + length) })
    i += 3 + length
  }
  return out
}

const parseSsl = (value: Uint8Array): SslInfo | string => {
  if (value.length < 5) return "a truncated SSL TLV"
  const client = value[0]!
  const subs = parseTlvs(value.subarray(5))
  if (typeof subs === "string") return `SSL TLV: ${subs}`
  const text = (type: number) => {
    const t = subs.find((x) => x.type === type)
    return t === undefined ? undefined : utf8.decode(t.value)
  }
  return {
    ssl: (client & 0x01) !== 0,
    clientCertificate: (client & 0x02) !== 0,
    verified: u32(value, 1) === 0,
    version: text(TLV.SSL_VERSION),
    commonName: text(TLV.SSL_CN),
    cipher: text(TLV.SSL_CIPHER),
    signatureAlgorithm: text(TLV.SSL_SIG_ALG),
    keyAlgorithm: text(TLV.SSL_KEY_ALG)
  }
}

const parseV2 = (bytes: Uint8Array): ParseResult => {
  const versionCommand = bytes[12]!
  if (versionCommand >> 4 !== 2) return invalid(`version 2 header: unknown version ${versionCommand >> 4}`)
  const cmd = versionCommand & 0x0f
  if (cmd > 1) return invalid(`version 2 header: unknown command ${cmd}`)
  const family = bytes[13]! >> 4
  const transport = bytes[13]! & 0x0f
  const length = 16 + u16(bytes, 14)
  if (bytes.length < length) return incomplete
  const header = bytes.subarray(0, length)
  const local = cmd === 0
  if (family > AF_UNIX) return invalid(`version 2 header: unknown address family ${family}`)
  if (!local && transport > 1) return invalid("version 2 header: not a stream connection")
  const addresses = addressLength[family as 0 | 1 | 2 | 3]
  if (length - 16 < addresses) return invalid("version 2 header: shorter than its addresses")
  const a = header.subarray(16)
  let source: Endpoint | undefined
  let destination: Endpoint | undefined
  if (family === AF_INET || family === AF_INET6) {
    const n = family === AF_INET ? 4 : 16
    source = { _tag: "Tcp", host: IpNetworks.fromBytes(a.subarray(0, n)), port: u16(a, 2 * n) }
    destination = { _tag: "Tcp", host: IpNetworks.fromBytes(a.subarray(n, 2 * n)), port: u16(a, 2 * n + 2) }
  } else if (family === AF_UNIX) {
    source = { _tag: "Unix", path: unixPath(a.subarray(0, 108)) }
    destination = { _tag: "Unix", path: unixPath(a.subarray(108, 216)) }
  }
  const tlvs = parseTlvs(header.subarray(16 + addresses))
  if (typeof tlvs === "string") return invalid(`version 2 header: ${tlvs}`)
  let alpn: string | undefined
  let authority: string | undefined
  let uniqueId: Uint8Array | undefined
  let ssl: SslInfo | undefined
  for (const t of tlvs) {
    switch (t.type) {
      case TLV.CRC32C: {
        if (t.value.length !== 4) return invalid("version 2 header: a CRC32C TLV that is not 4 bytes")
        const expected = u32(t.value, 0)
        const offset = t.value.byteOffset - header.byteOffset
        const copy = header.slice()
        copy.fill(0, offset, offset + 4)
        if (crc32c(copy) !== expected) return invalid("version 2 header: CRC32C checksum mismatch")
        break
      }
      case TLV.ALPN:
        alpn = latin1.decode(t.value)
        break
      case TLV.AUTHORITY:
        authority = utf8.decode(t.value)
        break
      case TLV.UNIQUE_ID:
        if (t.value.length > 128) return invalid("version 2 header: a unique ID longer than 128 bytes")
        uniqueId = t.value.slice()
        break
      case TLV.SSL: {
        const s = parseSsl(t.value)
        if (typeof s === "string") return invalid(`version 2 header: ${s}`)
        ssl = s
        break
      }
    }
  }
  return {
    _tag: "Complete",
    length,
    header: {
      version: 2,
      command: local ? "local" : "proxy",
      // LOCAL: the proxy speaks for itself; the addresses (if any) are to be ignored.
      source: local ? undefined : source,
      destination: local ? undefined : destination,
      // Copies: the header outlives the buffer it was read into.
      tlvs: tlvs.map((t) => ({ type: t.type, value: t.value.slice() })),
      ...(alpn === undefined ? {} : { alpn }),
      ...(authority === undefined ? {} : { authority }),
      ...(uniqueId === undefined ? {} : { uniqueId }),
      ...(ssl === undefined ? {} : { ssl })
    }
  }
}

// ---------------------------------------------------------------------------------------------
// CRC32C (Castagnoli), as the CRC32C TLV carries it

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1
    table[n] = c >>> 0
  }
  return table
})()

/** CRC32C of `bytes`. */
export const crc32c = (bytes: Uint8Array): number => {
  let c = 0xffffffff
  for (let i = 0; i < bytes.length; i++) c = CRC32C_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

// ---------------------------------------------------------------------------------------------
// Writing headers

/** What `format` writes. */
export interface FormatInput {
  /** 1: the text line; 2: the binary header. */
  readonly version: 1 | 2
  /** Default "proxy". Version 1 has no "local": it is written as UNKNOWN. */
  readonly command?: "proxy" | "local" | undefined
  /** Both or neither: without them, v1 UNKNOWN or v2 UNSPEC. */
  readonly source?: Endpoint | undefined
  /** The address the client connected to; with `source`. */
  readonly destination?: Endpoint | undefined
  /** Version 2 only. */
  readonly tlvs?: ReadonlyArray<Tlv> | undefined
  /** Version 2 only: append a CRC32C TLV over the header. */
  readonly crc32c?: boolean | undefined
}

const encoder = new TextEncoder()

/** Writes a header. Throws on addresses that do not fit (mixed families, a bad IP). */
export const format = (input: FormatInput): Uint8Array => {
  const { source, destination } = input
  if ((source === undefined) !== (destination === undefined)) throw new Error("PROXY header: give both addresses or neither")
  if (input.version === 1) {
    if (input.command === "local" || source === undefined || destination === undefined) return encoder.encode("PROXY UNKNOWN\r\n")
    if (source._tag !== "Tcp" || destination._tag !== "Tcp") throw new Error("PROXY v1 header: TCP addresses only")
    const v4 = IpNetworks.isIPv4(source.host)
    if (v4 !== IpNetworks.isIPv4(destination.host)) throw new Error("PROXY v1 header: both addresses of one family")
    return encoder.encode(`PROXY ${v4 ? "TCP4" : "TCP6"} ${source.host} ${destination.host} ${source.port} ${destination.port}\r\n`)
  }
  let family = AF_UNSPEC
  let addresses = new Uint8Array(0)
  if (source !== undefined && destination !== undefined) {
    if (source._tag === "Unix" && destination._tag === "Unix") {
      family = AF_UNIX
      addresses = new Uint8Array(216)
      addresses.set(encoder.encode(source.path).subarray(0, 107), 0)
      addresses.set(encoder.encode(destination.path).subarray(0, 107), 108)
    } else if (source._tag === "Tcp" && destination._tag === "Tcp") {
      const s = IpNetworks.toBytes(source.host)
      const d = IpNetworks.toBytes(destination.host)
      if (s === undefined || d === undefined || s.length !== d.length) throw new Error("PROXY v2 header: two IP addresses of one family")
      family = s.length === 4 ? AF_INET : AF_INET6
      addresses = new Uint8Array(2 * s.length + 4)
      addresses.set(s, 0)
      addresses.set(d, s.length)
      const view = new DataView(addresses.buffer)
      view.setUint16(2 * s.length, source.port)
      view.setUint16(2 * s.length + 2, destination.port)
    } else {
      throw new Error("PROXY v2 header: both addresses of one kind")
    }
  }
  const tlvs = [...(input.tlvs ?? []), ...(input.crc32c === true ? [{ type: TLV.CRC32C, value: new Uint8Array(4) }] : [])]
  const tlvLength = tlvs.reduce((n, t) => n + 3 + t.value.length, 0)
  const length = addresses.length + tlvLength
  if (length > 0xffff) throw new Error("PROXY v2 header: too long")
  const out = new Uint8Array(16 + length)
  out.set(SIGNATURE_V2, 0)
  out[12] = 0x20 | (input.command === "local" ? 0 : 1)
  out[13] = (family << 4) | (family === AF_UNSPEC ? 0 : 1)
  out[14] = length >> 8
  out[15] = length & 0xff
  out.set(addresses, 16)
  let i = 16 + addresses.length
  for (const t of tlvs) {
    out[i] = t.type
    out[i + 1] = t.value.length >> 8
    out[i + 2] = t.value.length & 0xff
    out.set(t.value, i + 3)
    i += 3 + t.value.length
  }
  if (input.crc32c === true) new DataView(out.buffer).setUint32(out.length - 4, crc32c(out))
  return out
}
