/**
 * Bundles each benchmark child into one ESM file with esbuild, the way a server is shipped
 * (tree-shaken, one file): loading hundreds of modules would inflate idle memory and start-up
 * for reasons that have nothing to do with the code under test. Peers are bundled alike.
 */
import * as esbuild from "esbuild"
import * as path from "node:path"

// Bundled CommonJS code may call require() for Node built-ins.
const requireShim = "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);"

/** Bundles `entries` (name → source path) into `outDir/<name>.mjs`; returns name → bundle path. */
export const bundle = async (
  entries: Readonly<Record<string, string>>,
  outDir: string
): Promise<Record<string, string>> => {
  await esbuild.build({
    entryPoints: entries,
    outdir: outDir,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node22",
    banner: { js: requireShim },
    logLevel: "warning"
  })
  return Object.fromEntries(Object.keys(entries).map((name) => [name, path.join(outDir, `${name}.mjs`)]))
}
