/**
 * The Node programs under test and the peers, and how they are started: each in its own
 * process, checked on start to run what it should. effect-smtp must resolve to `dist/` (the
 * package as it ships; `src/` only for `--profile-from src`), and `effect` and the peers to
 * node_modules.
 */
import * as path from "node:path"
import { type ChildMessage, NodeChild } from "./proc.ts"

const root = path.resolve(import.meta.dirname, "../..")

/**
 * `dist`: the shipped package, unbundled (the default); `src`: the same children with
 * `--conditions=source`, so effect-smtp runs from its TypeScript sources (profiles only);
 * `bundle`: one esbuild file (the extra `--bundled` row); `peer`: a peer library from node_modules;
 * `floor`: plain Node, no package at all (the extra `--floor` row).
 */
type Form = "dist" | "src" | "bundle" | "peer" | "floor"

export interface Program {
  readonly name: string
  readonly script: string
  readonly form: Form
}

const isUnder = (file: string, dir: string) => file.startsWith(`${dir}${path.sep}`)

/** Fails unless every package the child resolved comes from where `form` says. */
const checkResolved = (program: Program, ready: ChildMessage): void => {
  if (program.form === "bundle" || program.form === "floor") return // everything is inside the bundle; the floor loads no package
  const resolved = ready.resolved as Readonly<Record<string, string>> | undefined
  if (resolved === undefined || Object.keys(resolved).length === 0) throw new Error(`${program.name}: the child did not say what it loaded`)
  for (const [specifier, file] of Object.entries(resolved)) {
    const expected = specifier.startsWith("effect-smtp")
      ? path.join(root, program.form === "src" ? "src" : "dist")
      : path.join(root, "node_modules")
    if (!isUnder(file, expected)) {
      throw new Error(`${program.name}: ${specifier} resolved to ${file}, expected a file under ${expected}`)
    }
  }
}

/** Starts a program on `core` and checks what it loaded; `gc` adds --expose-gc. */
export const startProgram = async (program: Program, options: {
  readonly core: number
  readonly args?: ReadonlyArray<string>
  readonly gc?: boolean
  readonly nodeArgs?: ReadonlyArray<string>
}): Promise<{ readonly child: NodeChild; readonly ready: ChildMessage }> => {
  const nodeArgs = [
    ...(program.form === "src" ? ["--conditions=source", "--disable-warning=ExperimentalWarning"] : []),
    ...(options.gc === true ? ["--expose-gc"] : []),
    ...(options.nodeArgs ?? [])
  ]
  const started = await NodeChild.start({ script: program.script, args: options.args ?? [], nodeArgs, core: options.core })
  try {
    checkResolved(program, started.ready)
  } catch (e) {
    await started.child.stop()
    throw e
  }
  return started
}
