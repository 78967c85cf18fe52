/**
 * Reads a V8 .cpuprofile (node --cpu-prof) and says where the busy time went: by area
 * (socket writes and reads, the Effect runtime, GC, each module of effect-smtp…) and by function.
 *
 * A sample is charged to the area of its innermost JavaScript frame; samples in Node's own
 * stream/socket code or in native code (no URL) are charged to the socket write path if a
 * write frame is on that part of the stack, to the read path if a read frame is, and
 * otherwise to the Node module they are in.
 *
 * effect-smtp's frames from dist/ are named after their sources (dist/X.js is src/X.ts, one
 * to one) and their lines mapped back through dist's source maps.
 */
import { readFileSync } from "node:fs"
import { SourceMap } from "node:module"

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
  readonly columnNumber: number
}

interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: ReadonlyArray<number>
}

export interface CpuProfile {
  /** µs, on the process's monotonic clock. */
  readonly startTime: number
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const isNodeInternal = (url: string) => url.startsWith("node:")
const isNative = (f: CallFrame) => f.url === ""

const writeFrame = (f: CallFrame) =>
  (isNodeInternal(f.url) || isNative(f)) && /^(_?write|writev|writeGeneric|writevGeneric|writeOrBuffer|_writeGeneric|_writev|writeBuffer|writeUtf8String|writeLatin1String|doWrite|Writable\.write|Socket\._write)/.test(f.functionName)
const readFrame = (f: CallFrame) =>
  (isNodeInternal(f.url) || isNative(f)) && /^(onStreamRead|Readable\.read|read|readableAddChunk|addChunk|emitReadable|push|Socket\.read)/.test(f.functionName)

/** The area a JavaScript (non-Node, non-native) frame belongs to, from its file. */
const areaOfUrl = (url: string, root: string): string => {
  const file = url.replace(/^file:\/\//, "")
  const effect = /node_modules\/effect\/(?:src|dist)\/(.*)$/.exec(file)
  if (effect !== null) return `Effect runtime (${effect[1]!.replace(/\.(ts|js)$/, "")})`
  const dep = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file)
  if (dep !== null) return `dependency ${dep[1]}`
  if (file.startsWith(`${root}/dist/`)) return `effect-smtp ${sourceOf(file.slice(root.length + 1))}`
  if (file.startsWith(root)) return `effect-smtp ${file.slice(root.length + 1)}`
  return file
}

/** dist/X.js (tsc's output, one file per source) → src/X.ts. */
const sourceOf = (distPath: string) => distPath.replace(/^dist\//, "src/").replace(/\.js$/, ".ts")

const sourceMaps = new Map<string, SourceMap | undefined>()

/** Where a frame is, as "file:line" relative to `root`; dist/ frames through their source maps. */
const locate = (f: CallFrame, root: string): string => {
  if (f.url === "") return "native"
  const file = f.url.replace(/^file:\/\//, "")
  if (file.startsWith(`${root}/dist/`) && file.endsWith(".js")) {
    if (!sourceMaps.has(file)) {
      let map: SourceMap | undefined
      try {
        map = new SourceMap(JSON.parse(readFileSync(`${file}.map`, "utf8")))
      } catch {
        map = undefined
      }
      sourceMaps.set(file, map)
    }
    const entry = sourceMaps.get(file)?.findEntry(f.lineNumber, f.columnNumber)
    const rel = sourceOf(file.slice(root.length + 1))
    return entry !== undefined && "originalLine" in entry ? `${rel}:${entry.originalLine + 1}` : `${rel} (dist line ${f.lineNumber + 1})`
  }
  return `${file.replace(`${root}/`, "")}:${f.lineNumber + 1}`
}

export interface Breakdown {
  readonly busyMs: number
  readonly idleMs: number
  readonly areas: ReadonlyArray<{ readonly area: string; readonly ms: number; readonly share: number }>
  readonly functions: ReadonlyArray<{ readonly fn: string; readonly ms: number; readonly share: number }>
}

/** `window`: only samples taken in [start, end] (µs on the process's clock) count. */
export const analyze = (profile: CpuProfile, root: string, window?: readonly [number, number]): Breakdown => {
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const n of profile.nodes) {
    byId.set(n.id, n)
    for (const c of n.children ?? []) parent.set(c, n.id)
  }
  const selfMs = new Map<number, number>()
  let t = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i] ?? 0
    t += delta
    if (window !== undefined && (t < window[0] || t > window[1])) continue
    const id = profile.samples[i]!
    selfMs.set(id, (selfMs.get(id) ?? 0) + delta / 1000)
  }

  const areaCache = new Map<number, string>()
  const areaOf = (id: number): string => {
    const cached = areaCache.get(id)
    if (cached !== undefined) return cached
    const leaf = byId.get(id)!.callFrame
    let area: string
    if (leaf.functionName === "(garbage collector)") area = "GC"
    else if (leaf.functionName === "(idle)") area = "(idle)"
    else if (leaf.functionName === "(program)") area = "V8/native (program)"
    else {
      // Walk out through Node-internal and native frames to the first JavaScript frame.
      let sawWrite = false
      let sawRead = false
      let firstNodeModule: string | undefined
      let cur: number | undefined = id
      let js: CallFrame | undefined
      while (cur !== undefined) {
        const f: CallFrame = byId.get(cur)!.callFrame
        if (!(isNodeInternal(f.url) || isNative(f)) || f.functionName === "(root)") {
          js = f.functionName === "(root)" ? undefined : f
          break
        }
        sawWrite ||= writeFrame(f)
        sawRead ||= readFrame(f)
        if (firstNodeModule === undefined && isNodeInternal(f.url)) firstNodeModule = f.url
        cur = parent.get(cur)
      }
      if (sawWrite) area = "socket write path (node:net, streams, native)"
      else if (sawRead) area = "socket read path (node:net, streams, native)"
      else if (firstNodeModule !== undefined) area = `Node ${firstNodeModule}`
      else if (js !== undefined && (isNodeInternal(leaf.url) || isNative(leaf))) area = `native, called from ${areaOfUrl(js.url, root)}`
      else if (js !== undefined) area = areaOfUrl(js.url, root)
      else area = `native ${leaf.functionName || "(anonymous)"}`
    }
    areaCache.set(id, area)
    return area
  }

  const areas = new Map<string, number>()
  const functions = new Map<string, number>()
  let busy = 0
  let idle = 0
  for (const [id, ms] of selfMs) {
    const area = areaOf(id)
    if (area === "(idle)") {
      idle += ms
      continue
    }
    busy += ms
    areas.set(area, (areas.get(area) ?? 0) + ms)
    const f = byId.get(id)!.callFrame
    const key = `${f.functionName || "(anonymous)"} ${locate(f, root)}`
    functions.set(key, (functions.get(key) ?? 0) + ms)
  }
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1])
  return {
    busyMs: busy,
    idleMs: idle,
    areas: sorted(areas).map(([area, ms]) => ({ area, ms, share: ms / busy })),
    functions: sorted(functions).map(([fn, ms]) => ({ fn, ms, share: ms / busy }))
  }
}

/** Area totals folded into the few groups that matter for deciding what to optimise. */
export const groups = (b: Breakdown): ReadonlyArray<{ readonly group: string; readonly share: number }> => {
  const total = new Map<string, number>()
  for (const a of b.areas) {
    const group = a.area.startsWith("Effect runtime")
      ? "Effect runtime (all modules)"
      : a.area.startsWith("effect-smtp ")
      ? "effect-smtp code (all modules)"
      : a.area.startsWith("native, called from Effect")
      ? "Effect runtime (all modules)"
      : a.area.startsWith("native, called from effect-smtp")
      ? "effect-smtp code (all modules)"
      : a.area
    total.set(group, (total.get(group) ?? 0) + a.share)
  }
  return [...total].sort((x, y) => y[1] - x[1]).map(([group, share]) => ({ group, share }))
}
