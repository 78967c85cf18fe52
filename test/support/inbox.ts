/**
 * `effect-smtp serve --http` as users run it, for the inbox tests: the real command line as a
 * child process, mail sent to it over SMTP with the library's client, the API read over HTTP.
 */
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as NodeTransport from "../../src/NodeTransport.ts"
import * as SmtpClient from "../../src/SmtpClient.ts"
import * as Cli from "./cli.ts"

export interface Inbox {
  readonly r: Cli.Running
  /** `http://127.0.0.1:PORT` */
  readonly url: string
  /** The SMTP listener, `127.0.0.1:PORT`. */
  readonly smtp: string
  readonly maildir: string
}

export const tmpDir = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), prefix))

/** Starts `serve` with the inbox on a free port; resolves once both listeners are up. */
export const start = async (
  maildir: string,
  extra: ReadonlyArray<string> = []
): Promise<Inbox> => {
  const r = Cli.start(["serve", "--maildir", maildir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", ...extra])
  const http = await r.waitFor((e) => e.event === "listening" && e.protocol === "http")
  const smtp = await r.waitFor((e) => e.event === "listening" && e.protocol === "smtp")
  return { r, url: `http://${http.address as string}`, smtp: smtp.address as string, maildir }
}

/** Sends `body` over SMTP; resolves once the server has accepted it (and so indexed it). */
export const send = (
  inbox: Inbox,
  body: string | Uint8Array,
  envelope: { readonly from?: string; readonly to?: ReadonlyArray<string> } = {}
) => {
  const i = inbox.smtp.lastIndexOf(":")
  return Effect.runPromise(SmtpClient.sendMail({
    endpoint: { _tag: "Tcp", host: inbox.smtp.slice(0, i), port: Number(inbox.smtp.slice(i + 1)) },
    security: "none",
    from: envelope.from ?? "sender@example.com",
    to: envelope.to ?? ["rcpt@example.com"],
    body
  }).pipe(Effect.provide(NodeTransport.layer)))
}

export const getJson = async (inbox: Inbox, pathname: string, init?: RequestInit) => {
  const response = await fetch(inbox.url + pathname, init)
  const text = await response.text()
  return { status: response.status, headers: response.headers, body: text === "" ? undefined : JSON.parse(text) }
}

/** The message source as a list of CRLF lines. */
export const crlf = (...lines: ReadonlyArray<string>) => lines.join("\r\n") + "\r\n"
