/**
 * Throwaway certificates for TLS tests, made with the `openssl` CLI on first use and kept in
 * memory for the rest of the test file (each vitest worker makes its own; about 0.1 s).
 *
 * - `ca`: a test CA; `server` (CN=localhost, SAN localhost, 127.0.0.1, ::1) and `client`
 *   (CN=client.test, clientAuth) are signed by it.
 * - `untrusted`: a self-signed localhost certificate that chains to nothing, for handshakes
 *   that must fail.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

interface KeyPair {
  readonly key: string
  readonly cert: string
}

export interface TestCerts {
  readonly ca: string
  readonly server: KeyPair
  readonly client: KeyPair
  readonly untrusted: KeyPair
}

let cached: TestCerts | undefined

export const testCerts = (): TestCerts => {
  cached ??= generate()
  return cached
}

const generate = (): TestCerts => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "effect-smtp-certs-"))
  try {
    const file = (name: string) => path.join(dir, name)
    const openssl = (...args: ReadonlyArray<string>) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] })
    // EC keys: fast to make, fast handshakes.
    const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    openssl("req", "-x509", ...newKey, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=effect-smtp test CA",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    const leaf = (name: string, subject: string, ext: string) => {
      fs.writeFileSync(file(`${name}.ext`), ext)
      openssl("req", ...newKey, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject)
      openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.ext`)
    }
    leaf("server", "/CN=localhost",
      "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    leaf("client", "/CN=client.test",
      "subjectAltName=DNS:client.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")

    openssl("req", "-x509", ...newKey, "-keyout", "untrusted.key", "-out", "untrusted.crt", "-days", "2",
      "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1")

    const read = (name: string) => fs.readFileSync(file(name), "utf8")
    const pair = (name: string): KeyPair => ({ key: read(`${name}.key`), cert: read(`${name}.crt`) })
    return { ca: read("ca.crt"), server: pair("server"), client: pair("client"), untrusted: pair("untrusted") }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
