/**
 * The inbox page: plain HTML, CSS and JavaScript from `page/`, read once at start. Its own
 * Content-Security-Policy allows only the page's files and its API, so nothing a message
 * contains can run as the page.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as fs from "node:fs/promises"

/**
 * The page's files are missing from the installation. (Exported so that the layer's declared
 * type can name it.)
 * @public
 */
export class PageError extends Data.TaggedError("PageError")<{ readonly message: string; readonly cause?: unknown }> {}

const policy = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'"
].join("; ")

const files = [
  { path: "/", file: "index.html", type: "text/html; charset=utf-8" },
  { path: "/inbox.js", file: "inbox.js", type: "text/javascript; charset=utf-8" },
  { path: "/inbox.css", file: "inbox.css", type: "text/css; charset=utf-8" },
  { path: "/favicon.svg", file: "favicon.svg", type: "image/svg+xml" }
] as const

/** Where the files are: beside this module in the sources, beside the bundle in a build. */
const directory = new URL("./page/", import.meta.url)

export const routes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  for (const { file, path, type } of files) {
    const url = new URL(file, directory)
    const body = yield* Effect.tryPromise({
      try: () => fs.readFile(url),
      catch: (cause) => new PageError({ message: `cannot read the inbox page ${url.pathname}`, cause })
    })
    yield* router.add("GET", path, HttpServerResponse.uint8Array(body, {
      contentType: type,
      headers: { "content-security-policy": policy }
    }))
  }
}))
