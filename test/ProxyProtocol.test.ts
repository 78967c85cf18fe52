/**
 * The PROXY protocol header: what parse makes of headers (HAProxy's proxy-protocol.txt examples
 * and edge cases), what it refuses and how early, format and parse as inverses, and that no
 * input throws.
 */
import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import * as ProxyProtocol from "../src/ProxyProtocol.ts"
import type { Endpoint } from "../src/Transport.ts"

const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0))
const tcp = (host: string, port: number): Endpoint => ({ _tag: "Tcp", host, port })

const complete = (b: Uint8Array) => {
  const r = ProxyProtocol.parse(b)
  if (r._tag !== "Complete") throw new Error(`expected a header, got ${JSON.stringify(r)}`)
  return r
}
const reason = (b: Uint8Array) => {
  const r = ProxyProtocol.parse(b)
  if (r._tag !== "Invalid") throw new Error(`expected Invalid, got ${r._tag}`)
  return r.reason
}

/** A version 2 header by hand, with `body` after the 16 fixed bytes. */
const v2 = (versionCommand: number, family: number, body: ReadonlyArray<number>) =>
  Uint8Array.from([...ProxyProtocol.SIGNATURE_V2, versionCommand, family, body.length >> 8, body.length & 0xff, ...body])

describe("PROXY protocol version 1", () => {
  it("TCP4 and TCP6: addresses, ports, and where the header ends", () => {
    const r = complete(bytes("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO x\r\n"))
    assert.strictEqual(r.length, 44)
    assert.deepStrictEqual(r.header, {
      version: 1,
      command: "proxy",
      source: tcp("192.0.2.1", 56324),
      destination: tcp("198.51.100.2", 25),
      tlvs: []
    })
    const six = complete(bytes("PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 65535 0\r\n"))
    // One spelling per address: RFC 5952, as Node reports peers.
    assert.deepStrictEqual(six.header.source, tcp("2001:db8::1", 65535))
    assert.deepStrictEqual(six.header.destination, tcp("::1", 0))
  })

  it("UNKNOWN: no addresses, whatever follows on the line", () => {
    for (const line of ["PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"]) {
      const r = complete(bytes(line))
      assert.strictEqual(r.length, line.length)
      assert.strictEqual(r.header.source, undefined)
      assert.strictEqual(r.header.destination, undefined)
    }
  })

  it("incomplete until the CRLF, up to 107 bytes; invalid beyond", () => {
    const line = bytes("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n")
    for (let n = 1; n < line.length; n++) assert.strictEqual(ProxyProtocol.parse(line.subarray(0, n))._tag, "Incomplete", `${n} bytes`)
    const longest = `PROXY UNKNOWN ${"x".repeat(107 - 16)}\r\n`
    assert.strictEqual(longest.length, 107)
    assert.strictEqual(complete(bytes(longest)).length, 107)
    assert.match(reason(bytes(`PROXY UNKNOWN ${"x".repeat(107 - 15)}\r\n`)), /longer than 107/)
    assert.match(reason(bytes(`PROXY UNKNOWN ${"x".repeat(200)}`)), /longer than 107/)
  })

  it("refuses what is not exactly the grammar", () => {
    const bad = [
      "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\n", // LF alone
      "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\rX",
      "PROXY TCP4  192.0.2.1 198.51.100.2 56324 25\r\n", // two spaces
      "PROXY tcp4 192.0.2.1 198.51.100.2 56324 25\r\n",
      "PROXY TCP5 192.0.2.1 198.51.100.2 56324 25\r\n",
      "PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
      "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25 extra\r\n",
      "PROXY TCP4 2001:db8::1 198.51.100.2 56324 25\r\n", // family mismatch
      "PROXY TCP6 192.0.2.1 ::1 56324 25\r\n",
      "PROXY TCP4 192.0.2.256 198.51.100.2 56324 25\r\n",
      "PROXY TCP4 0x7f.0.0.1 198.51.100.2 56324 25\r\n",
      "PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n",
      "PROXY TCP4 192.0.2.1 198.51.100.2 056324 25\r\n",
      "PROXY TCP4 192.0.2.1 198.51.100.2 -1 25\r\n",
      "PROXY TCP4 192.0.2.1\u0000198.51.100.2 56324 25\r\n"
    ]
    for (const line of bad) assert.strictEqual(ProxyProtocol.parse(bytes(line))._tag, "Invalid", JSON.stringify(line))
  })

  it("a client that is not a proxy is refused at its first byte", () => {
    for (const start of ["E", "EHLO client\r\n", "\u0016\u0003\u0001", "PROXX", "proxy "]) {
      assert.strictEqual(ProxyProtocol.parse(bytes(start))._tag, "Invalid", JSON.stringify(start))
    }
    assert.strictEqual(ProxyProtocol.parse(bytes("PRO"))._tag, "Incomplete")
    assert.strictEqual(ProxyProtocol.parse(new Uint8Array(0))._tag, "Incomplete")
  })
})

describe("PROXY protocol version 2", () => {
  it("PROXY over IPv4, IPv6 and Unix sockets", () => {
    const inet = v2(0x21, 0x11, [192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0, 25])
    const r = complete(Uint8Array.from([...inet, 0x45, 0x48]))
    assert.strictEqual(r.length, 28)
    assert.deepStrictEqual(r.header.source, tcp("192.0.2.1", 56324))
    assert.deepStrictEqual(r.header.destination, tcp("198.51.100.2", 25))
    assert.strictEqual(r.header.version, 2)
    assert.strictEqual(r.header.command, "proxy")

    const a = [0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 1]
    const b = [...Array(15).fill(0), 1]
    const six = complete(v2(0x21, 0x21, [...a, ...b, 0, 80, 1, 0]))
    assert.deepStrictEqual(six.header.source, tcp("2001:db8::1", 80))
    assert.deepStrictEqual(six.header.destination, tcp("::1", 256))

    const path = (p: string) => [...bytes(p), ...Array(108 - p.length).fill(0)]
    const unix = complete(v2(0x21, 0x31, [...path("/run/client"), ...path("/run/server")]))
    assert.deepStrictEqual(unix.header.source, { _tag: "Unix", path: "/run/client" })
    assert.deepStrictEqual(unix.header.destination, { _tag: "Unix", path: "/run/server" })
  })

  it("LOCAL (a health check) and UNSPEC carry no client; addresses given with LOCAL are ignored", () => {
    const local = complete(v2(0x20, 0x00, []))
    assert.strictEqual(local.header.command, "local")
    assert.strictEqual(local.header.source, undefined)
    const localWithAddresses = complete(v2(0x20, 0x11, [192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 25]))
    assert.strictEqual(localWithAddresses.header.source, undefined)
    const unspec = complete(v2(0x21, 0x00, []))
    assert.strictEqual(unspec.header.command, "proxy")
    assert.strictEqual(unspec.header.source, undefined)
  })

  it("TLVs: every one raw, the standard ones decoded", () => {
    const tlv = (type: number, value: ReadonlyArray<number>) => [type, value.length >> 8, value.length & 0xff, ...value]
    const ssl = tlv(0x20, [
      0x07, // SSL, certificate on this connection and in the session
      0,
      0,
      0,
      0, // verified
      ...tlv(0x21, [...bytes("TLSv1.3")]),
      ...tlv(0x22, [...bytes("client.example")]),
      ...tlv(0x23, [...bytes("TLS_AES_256_GCM_SHA384")])
    ])
    const r = complete(v2(0x21, 0x11, [
      192,
      0,
      2,
      1,
      198,
      51,
      100,
      2,
      0,
      1,
      0,
      25,
      ...tlv(0x01, [...bytes("smtp")]),
      ...tlv(0x02, [...bytes("mx.example.com")]),
      ...tlv(0x05, [1, 2, 3]),
      ...tlv(0x04, [0, 0]),
      ...tlv(0xea, [...bytes("vpce-1")]),
      ...ssl
    ]))
    assert.deepStrictEqual(r.header.tlvs.map((t) => t.type), [0x01, 0x02, 0x05, 0x04, 0xea, 0x20])
    assert.strictEqual(r.header.alpn, "smtp")
    assert.strictEqual(r.header.authority, "mx.example.com")
    assert.deepStrictEqual(r.header.uniqueId, Uint8Array.of(1, 2, 3))
    assert.deepStrictEqual(r.header.ssl, {
      ssl: true,
      clientCertificate: true,
      verified: true,
      version: "TLSv1.3",
      commonName: "client.example",
      cipher: "TLS_AES_256_GCM_SHA384",
      signatureAlgorithm: undefined,
      keyAlgorithm: undefined
    })
    assert.strictEqual(Buffer.from(r.header.tlvs[4]!.value).toString(), "vpce-1")
  })

  it("CRC32C: the standard check value; a matching checksum passes, any changed byte fails", () => {
    assert.strictEqual(ProxyProtocol.crc32c(bytes("123456789")), 0xe3069283)
    const good = ProxyProtocol.format({ version: 2, source: tcp("192.0.2.1", 1), destination: tcp("192.0.2.2", 25), crc32c: true })
    assert.strictEqual(complete(good).header.tlvs[0]!.type, ProxyProtocol.TLV.CRC32C)
    for (const i of [13, 16, 19, 27, good.length - 1]) {
      const bad = good.slice()
      bad[i]! ^= 0x01
      assert.strictEqual(ProxyProtocol.parse(bad)._tag, "Invalid", `byte ${i}`)
    }
  })

  it("refuses unknown versions, commands, families, datagrams, and lengths that do not add up", () => {
    const inet = [192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 25]
    assert.match(reason(v2(0x11, 0x11, inet)), /version/)
    assert.match(reason(v2(0x22, 0x11, inet)), /command/)
    assert.match(reason(v2(0x21, 0x41, inet)), /family/)
    assert.match(reason(v2(0x21, 0x12, inet)), /stream/)
    assert.match(reason(v2(0x21, 0x11, inet.slice(0, 11))), /shorter than its addresses/)
    assert.match(reason(v2(0x21, 0x11, [...inet, 0x01, 0x00])), /truncated TLV/)
    assert.match(reason(v2(0x21, 0x11, [...inet, 0x01, 0x00, 0x05, 1])), /longer than the header/)
    assert.match(reason(v2(0x21, 0x11, [...inet, 0x03, 0x00, 0x02, 1, 2])), /CRC32C/)
    assert.match(reason(v2(0x21, 0x11, [...inet, 0x20, 0x00, 0x02, 1, 2])), /SSL/)
  })

  it("incomplete through the signature, the fixed part and the announced length", () => {
    const h = ProxyProtocol.format({ version: 2, source: tcp("2001:db8::1", 1), destination: tcp("2001:db8::2", 2) })
    for (let n = 1; n < h.length; n++) assert.strictEqual(ProxyProtocol.parse(h.subarray(0, n))._tag, "Incomplete", `${n} bytes`)
    assert.strictEqual(complete(h).length, h.length)
    // Where the signature goes wrong, it is not a header.
    assert.strictEqual(ProxyProtocol.parse(Uint8Array.of(0x0d, 0x0a, 0x0d, 0x0b))._tag, "Invalid")
  })
})

describe("PROXY protocol format and parse", () => {
  const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join("."))
  const ipv6 = fc.ipV6().map((a) => ProxyProtocol.parse(ProxyProtocol.format({ version: 2, source: tcp(a, 0), destination: tcp(a, 0) })))
    .map((r) => r._tag === "Complete" && r.header.source?._tag === "Tcp" ? r.header.source.host : "::")
  const port = fc.nat(65535)
  const pair = fc.oneof(
    fc.tuple(ipv4, ipv4, port, port),
    fc.tuple(ipv6, ipv6, port, port)
  )
  const tlvs = fc.array(
    fc.record({ type: fc.integer({ min: 0x06, max: 0x1f }).filter((t) => t !== 0x20), value: fc.uint8Array({ maxLength: 40 }) }),
    { maxLength: 4 }
  )

  it("parse reads back what format wrote, in either version, with the bytes after it left alone", () => {
    fc.assert(fc.property(pair, tlvs, fc.boolean(), fc.uint8Array({ maxLength: 20 }), ([s, d, sp, dp], t, crc, after) => {
      const source = tcp(s, sp)
      const destination = tcp(d, dp)
      const one = ProxyProtocol.format({ version: 1, source, destination })
      const r1 = complete(Uint8Array.from([...one, ...after]))
      assert.strictEqual(r1.length, one.length)
      assert.deepStrictEqual([r1.header.source, r1.header.destination], [source, destination])
      const two = ProxyProtocol.format({ version: 2, source, destination, tlvs: t, crc32c: crc })
      const r2 = complete(Uint8Array.from([...two, ...after]))
      assert.strictEqual(r2.length, two.length)
      assert.deepStrictEqual([r2.header.source, r2.header.destination], [source, destination])
      assert.deepStrictEqual(r2.header.tlvs.slice(0, t.length).map((x) => [x.type, [...x.value]]), t.map((x) => [x.type, [...x.value]]))
    }))
  })

  it("any bytes: a result, never an exception; a prefix of a header is never invalid", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
      ProxyProtocol.parse(b)
      ProxyProtocol.parse(Uint8Array.from([...ProxyProtocol.SIGNATURE_V2, ...b]))
      ProxyProtocol.parse(Uint8Array.from([...bytes("PROXY "), ...b]))
    }))
    fc.assert(fc.property(pair, fc.nat(), ([s, d, sp, dp], cut) => {
      const h = ProxyProtocol.format({ version: 2, source: tcp(s, sp), destination: tcp(d, dp), crc32c: true })
      assert.strictEqual(ProxyProtocol.parse(h.subarray(0, cut % h.length))._tag, "Incomplete")
    }))
  })
})
