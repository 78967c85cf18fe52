// The inbox page: a list of messages kept live by server-sent events, and a message view.
// Everything that comes from a message is put in the page as text (textContent), never as HTML;
// the HTML part is shown only inside a sandboxed iframe the server locks down itself.
"use strict"

const $ = (id) => document.getElementById(id)
const api = (path, init) => fetch(path, init).then(async (r) => {
  if (!r.ok && r.status !== 204) throw new Error((await r.json().catch(() => ({}))).error ?? r.statusText)
  return r.status === 204 ? null : r.json()
})
const el = (tag, className, text) => {
  const e = document.createElement(tag)
  if (className) e.className = className
  if (text !== undefined) e.textContent = text
  return e
}
const messageUrl = (id) => `/api/messages/${encodeURIComponent(id)}`

const state = { messages: [], selected: null, query: "", fresh: new Set(), remote: false }

const size = (n) => n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`
const mailbox = (m) => m.name ? `${m.name} <${m.address}>` : m.address
const sender = (s) => s.from ? (s.from.name || s.from.address) : (s.envelope?.from || "(no sender)")
const when = (iso) => {
  const d = new Date(iso)
  const today = new Date()
  return d.toDateString() === today.toDateString()
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { month: "short", day: "numeric" })
}

// ---- the list

let refreshing = null
const refresh = () => {
  clearTimeout(refreshing)
  refreshing = setTimeout(loadList, 50)
}

async function loadList() {
  const q = state.query ? `&q=${encodeURIComponent(state.query)}` : ""
  const page = await api(`/api/messages?limit=500${q}`)
  state.messages = page.messages
  renderList(page)
}

function renderList(page) {
  const list = $("list")
  list.replaceChildren(...page.messages.map(item))
  const plural = (n) => `${n} message${n === 1 ? "" : "s"}`
  $("count").textContent = page.total === 0 ? ""
    : state.query ? `${page.count} of ${plural(page.total)} match “${state.query}”`
    : plural(page.total)
  $("empty").hidden = page.total !== 0
  $("count").hidden = page.total === 0
  list.hidden = page.total === 0
  document.title = page.total === 0 ? "Inbox · effect-smtp" : `Inbox (${page.total}) · effect-smtp`
  state.fresh.clear()
}

function item(s) {
  const li = el("li", "item")
  li.dataset.id = s.id
  if (s.id === state.selected) li.classList.add("selected")
  if (state.fresh.has(s.id)) li.classList.add("fresh")
  li.append(el("span", "who", sender(s)), el("span", "when", when(s.receivedAt)))
  const subject = el("span", "subject")
  const attached = s.attachments.filter((a) => !a.related).length
  if (attached > 0) {
    const clip = el("span", "clip")
    clip.title = `${attached} attachment${attached === 1 ? "" : "s"}`
    subject.append(clip)
  }
  subject.append(s.subject || "(no subject)")
  li.append(subject, el("span", "size", size(s.size)), el("span", "snippet", s.snippet || (s.problems[0] ?? "")))
  li.title = `${sender(s)} — ${s.subject}\n${new Date(s.receivedAt).toLocaleString()}`
  li.addEventListener("click", () => select(s.id))
  return li
}

// ---- one message

let current = null

async function select(id) {
  state.selected = id
  if (location.hash.slice(1) !== encodeURIComponent(id)) history.replaceState(null, "", `#${encodeURIComponent(id)}`)
  for (const li of $("list").children) li.classList.toggle("selected", li.dataset.id === id)
  try {
    current = await api(messageUrl(id))
  } catch {
    return deselect()
  }
  if (state.selected === id) renderMessage(current)
}

function deselect() {
  state.selected = null
  current = null
  history.replaceState(null, "", location.pathname)
  $("message").hidden = true
  $("placeholder").hidden = false
  showHtml(null)
  for (const li of $("list").children) li.classList.remove("selected")
}

function renderMessage(m) {
  $("placeholder").hidden = true
  $("message").hidden = false
  $("m-subject").textContent = m.subject || "(no subject)"
  $("m-download").href = `${messageUrl(m.id)}/download`

  const meta = $("m-meta")
  meta.replaceChildren()
  const row = (label, value) => {
    if (!value) return
    meta.append(el("dt", "", label), el("dd", "", value))
  }
  row("From", m.from ? mailbox(m.from) : "")
  row("To", m.to.map(mailbox).join(", "))
  row("Cc", m.cc.map(mailbox).join(", "))
  row("Reply-To", m.replyTo.map(mailbox).join(", "))
  row("Date", m.date ? new Date(m.date).toLocaleString() : "")
  row("Received", `${new Date(m.receivedAt).toLocaleString()} · ${size(m.size)}`)
  if (m.envelope) row("Envelope", `${m.envelope.from || "<>"} → ${m.envelope.to.join(", ")}`)

  $("m-problems").hidden = m.problems.length === 0
  $("m-problems").textContent = m.problems.join(" ")

  const attachments = $("m-attachments")
  attachments.replaceChildren(...m.attachments.filter((a) => !a.related || !m.html).map((a) => {
    const link = el("a", "", a.filename || `attachment ${a.index + 1}`)
    link.href = a.url
    link.append(el("span", "muted", `${a.mimeType}, ${size(a.size)}`))
    const li = el("li")
    li.append(link)
    return li
  }))
  attachments.hidden = attachments.children.length === 0

  $("m-text").textContent = m.text ?? ""
  const headers = $("m-headers")
  headers.replaceChildren(...m.headers.map((h) => {
    const tr = el("tr")
    tr.append(el("td", "", h.name), el("td", "", h.value))
    return tr
  }))
  $("m-source").textContent = ""
  $("m-remote").hidden = !m.remoteContent
  state.remote = false

  tabButton("html").disabled = m.html === null
  tabButton("text").disabled = m.text === null
  showTab(m.html !== null ? "html" : "text")
}

// A new frame each time the HTML is shown: Chromium may leave a frame blank that was loaded,
// or hidden, while its panel was not displayed.
function showHtml(m) {
  const old = $("m-html")
  const frame = document.createElement("iframe")
  for (const name of ["id", "title", "sandbox", "referrerpolicy"]) frame.setAttribute(name, old.getAttribute(name))
  if (m?.html != null) frame.src = `${messageUrl(m.id)}/html${state.remote ? "?remote=1" : ""}`
  old.replaceWith(frame)
}

const tabButton = (name) => document.querySelector(`.tabs [data-tab="${name}"]`)

async function showTab(name) {
  for (const b of document.querySelectorAll(".tabs button")) b.setAttribute("aria-selected", String(b.dataset.tab === name))
  for (const p of document.querySelectorAll("[data-panel]")) p.hidden = p.dataset.panel !== name
  if (name === "html") showHtml(current)
  if (name === "source" && current && $("m-source").textContent === "") {
    const id = current.id
    const text = await fetch(`${messageUrl(id)}/raw`).then((r) => r.text())
    if (current?.id === id) $("m-source").textContent = text
  }
}

// ---- actions

for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab))

$("m-load-remote").addEventListener("click", () => {
  if (!current) return
  $("m-remote").hidden = true
  state.remote = true
  showHtml(current)
})

$("m-delete").addEventListener("click", async () => {
  if (!current) return
  const id = current.id
  const index = state.messages.findIndex((s) => s.id === id)
  await api(messageUrl(id), { method: "DELETE" }).catch(() => {})
  const next = state.messages[index + 1] ?? state.messages[index - 1]
  if (next && next.id !== id) select(next.id)
  else deselect()
})

$("delete-all").addEventListener("click", async () => {
  if (state.messages.length === 0 || !confirm("Delete every message in the inbox?")) return
  await api("/api/messages", { method: "DELETE" })
  deselect()
})

let searching = null
$("search").addEventListener("input", (e) => {
  clearTimeout(searching)
  searching = setTimeout(() => {
    state.query = e.target.value.trim()
    loadList()
  }, 150)
})

document.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLInputElement || e.metaKey || e.ctrlKey || e.altKey) return
  const step = e.key === "j" || e.key === "ArrowDown" ? 1 : e.key === "k" || e.key === "ArrowUp" ? -1 : 0
  if (step === 0) return
  e.preventDefault()
  const index = state.messages.findIndex((s) => s.id === state.selected)
  const next = state.messages[index < 0 ? 0 : index + step]
  if (next) {
    select(next.id)
    $("list").querySelector(`[data-id="${CSS.escape(next.id)}"]`)?.scrollIntoView({ block: "nearest" })
  }
})

// ---- live updates

function connect() {
  const status = $("status")
  const events = new EventSource("/api/events")
  events.addEventListener("open", () => {
    status.textContent = "live"
    status.classList.add("live")
    refresh() // whatever happened while we were away
  })
  events.addEventListener("error", () => {
    status.textContent = "reconnecting…"
    status.classList.remove("live")
  })
  events.addEventListener("received", (e) => {
    state.fresh.add(JSON.parse(e.data).id)
    refresh()
  })
  events.addEventListener("deleted", (e) => {
    if (JSON.parse(e.data).id === state.selected) deselect()
    refresh()
  })
  events.addEventListener("cleared", () => {
    deselect()
    refresh()
  })
}

async function start() {
  const server = await api("/api/server").catch(() => null)
  const smtp = server?.listeners.find((l) => l.protocol !== "http")
  if (smtp) {
    const hint = $("empty-hint")
    hint.replaceChildren("Send one to ", el("code", "", smtp.address), ", for example:",
      el("code", "command", [
        "effect-smtp send", `--server ${smtp.address}`, "--from me@example.com", "--to you@example.com", "message.eml"
      ].join(" \\\n  ")))
  }
  connect()
  await loadList()
  const wanted = decodeURIComponent(location.hash.slice(1))
  if (wanted && state.messages.some((s) => s.id === wanted)) select(wanted)
}

start()
