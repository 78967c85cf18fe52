/**
 * Python's aiosmtpd as a server for effect-smtp's client: Debian's python3-aiosmtpd under
 * Debian's own /usr/bin/python3 (a python3 earlier on PATH would not have it), listening on a
 * Unix socket in the test's scratch directory with STARTTLS required, AUTH (PLAIN, LOGIN),
 * SMTPUTF8 and a size limit, refusing `nobody@…` at RCPT. Each accepted message is written
 * to a file before the 250 goes out, so it is there when the client has its reply.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import { testCerts } from "../../support/certs.ts"
import type { Scratch } from "./files.ts"
import { daemon, type ProcessError } from "./process.ts"

/** One message as aiosmtpd's handler saw it. */
interface AioMessage {
  readonly helo: string
  readonly tls: boolean
  readonly authenticatedAs: string | null
  readonly from: string
  readonly mailOptions: ReadonlyArray<string>
  readonly to: ReadonlyArray<string>
  readonly content: Buffer
}

export interface Aiosmtpd {
  readonly socket: string
  /** The messages accepted so far, in order. */
  readonly messages: () => ReadonlyArray<AioMessage>
}

const server = `
import base64, json, os, signal, ssl, sys
from aiosmtpd.controller import UnixSocketController
from aiosmtpd.smtp import AuthResult, LoginPassword

args = json.loads(sys.argv[1])
tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(args["cert"], args["key"])
accepted = 0

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        global accepted
        accepted += 1
        auth = session.auth_data
        record = {
            "helo": session.host_name,
            "tls": session.ssl is not None,
            "authenticatedAs": auth.login.decode() if isinstance(auth, LoginPassword) and session.authenticated else None,
            "from": envelope.mail_from,
            "mailOptions": envelope.mail_options,
            "to": envelope.rcpt_tos,
            "content": base64.b64encode(envelope.original_content).decode(),
        }
        path = os.path.join(args["dir"], "%04d.json" % accepted)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 Message accepted for delivery"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and args["users"].get(auth_data.login.decode()) == auth_data.password.decode()
    # handled=False: aiosmtpd itself answers a failure (535).
    return AuthResult(success=ok, handled=False, auth_data=auth_data)

controller = UnixSocketController(
    Handler(), unix_socket=args["socket"], hostname="aiosmtpd.test", tls_context=tls, require_starttls=True,
    authenticator=authenticator, auth_required=True, enable_SMTPUTF8=True, data_size_limit=args["size"])
controller.start()
signal.sigwait({signal.SIGTERM, signal.SIGINT})
controller.stop()
`

export const start = (
  files: Scratch,
  options: { readonly users: Readonly<Record<string, string>>; readonly size: number }
): Effect.Effect<Aiosmtpd, ProcessError, Scope.Scope> =>
  Effect.gen(function*() {
    const certs = testCerts()
    const socket = files.path("aiosmtpd.sock")
    const dir = files.path("aiosmtpd")
    fs.mkdirSync(dir)
    const args = {
      socket,
      dir,
      cert: files.write("aiosmtpd.crt", certs.server.cert),
      key: files.write("aiosmtpd.key", certs.server.key, 0o600),
      users: options.users,
      size: options.size
    }
    const python = yield* daemon("/usr/bin/python3", ["-c", server, JSON.stringify(args)])
    yield* python.listening(socket)
    return {
      socket,
      messages: () =>
        fs.readdirSync(dir).filter((f) => f.endsWith(".json")).sort().map((f) => {
          const m = JSON.parse(fs.readFileSync(`${dir}/${f}`, "utf8")) as Omit<AioMessage, "content"> & { content: string }
          return { ...m, content: Buffer.from(m.content, "base64") }
        })
    }
  })
