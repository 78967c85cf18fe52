/**
 * The HTML part of a message, made safe to look at. It is served as a document of its own whose
 * Content-Security-Policy runs no script, submits no form and loads nothing from the network
 * (unless the person asks for remote content, and then only images, styles and fonts), and the
 * page shows it in an iframe sandboxed the same way, so the mail never shares the inbox's origin.
 * Embedded images (`cid:` references) are inlined as `data:` URLs.
 */
import type * as Mime from "./Mime.ts"

/** The iframe's `sandbox`: no scripts, an opaque origin; links may open a normal tab. */
const sandbox = "allow-popups allow-popups-to-escape-sandbox"

/** The policy of the message document. */
export const contentSecurityPolicy = (remote: boolean): string => {
  const network = remote ? " https: http:" : ""
  return [
    "default-src 'none'",
    `img-src data:${network}`,
    `style-src 'unsafe-inline'${network}`,
    `font-src data:${network}`,
    "form-action 'none'",
    "frame-ancestors 'self'",
    `sandbox ${sandbox}`
  ].join("; ")
}

const remoteUrl = String.raw`["']?\s*(?:https?:)?//`
const remotePatterns = [
  new RegExp(String.raw`\b(?:src|srcset|background|poster)\s*=\s*${remoteUrl}`, "i"),
  new RegExp(String.raw`url\(\s*${remoteUrl}`, "i"),
  new RegExp(String.raw`@import\s+(?:url\()?\s*${remoteUrl}`, "i"),
  // Bounded, so that many unclosed <link tags cannot make the search quadratic.
  new RegExp(String.raw`<link\b[^>]{0,500}?\bhref\s*=\s*${remoteUrl}`, "i")
]

/** Whether the HTML refers to images, styles or fonts on the network (blocked unless asked for). */
export const hasRemoteContent = (html: string): boolean => remotePatterns.some((p) => p.test(html))

/** A MIME type fit to put in a `data:` URL. */
const safeType = (type: string) => /^[a-z0-9.+-]+\/[a-z0-9.+-]+$/.test(type) ? type : "application/octet-stream"

/** Embedded images are inlined up to this size each. */
const maxInlineBytes = 10 * 1024 * 1024

/** Readable defaults for mail that brings no style of its own; the mail's styles come later and win. */
const defaults = "<style>html{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2328}" +
  "body{margin:16px;overflow-wrap:anywhere}</style>"

/**
 * The document to serve: links open in a new tab, `cid:` images are inlined, and reasonable
 * default styles apply. The policy above does the securing; this only makes it pleasant.
 */
export const document = (html: string, parsed: Mime.Parsed): string => {
  let body = html
  for (const a of parsed.message.attachments) {
    if (a.contentId === null || !a.mimeType.startsWith("image/") || a.size > maxInlineBytes) continue
    const content = parsed.content(a.index)
    if (content === undefined) continue
    const id = a.contentId.replace(/^<|>$/g, "")
    const cid = `cid:${id}`
    if (id === "" || !body.includes(cid)) continue
    body = body.split(cid).join(`data:${safeType(a.mimeType)};base64,${Buffer.from(content).toString("base64")}`)
  }
  const preamble = `<base target="_blank">${defaults}`
  const head = /<head\b[^>]{0,500}>/i.exec(body)
  return head === null
    ? preamble + body
    : body.slice(0, head.index + head[0].length) + preamble + body.slice(head.index + head[0].length)
}
