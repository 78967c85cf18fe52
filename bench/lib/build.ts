/**
 * Getting the code under test into its shipped form: `dist/` must be built from the current
 * sources (`npm run bench` runs `npm run build` first), and the benchmark children are
 * compiled to plain JavaScript (`bench/tsconfig.json` → `.bench/js/`), so that every measured
 * Node process runs JavaScript only, unbundled, with `effect-smtp/*` resolved by Node through
 * package.json "exports" to `dist/` (the children live inside the package, so its own name
 * resolves to itself, as the README's imports do in an app).
 */
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, rmSync, statSync } from "node:fs"
import * as path from "node:path"

const newestMtime = (dir: string, ext: string): number => {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith(ext)) {
      newest = Math.max(newest, statSync(path.join(entry.parentPath, entry.name)).mtimeMs)
    }
  }
  return newest
}

/** Fails unless dist/ exists and is at least as new as every source file. */
export const checkDist = (root: string): void => {
  const dist = path.join(root, "dist")
  if (!existsSync(path.join(dist, "SmtpServer.js"))) {
    throw new Error("dist/ is missing: run `npm run build` (npm run bench does it first)")
  }
  const src = newestMtime(path.join(root, "src"), ".ts")
  const built = newestMtime(dist, ".js")
  if (src > built) throw new Error("dist/ is older than src/: run `npm run build` (npm run bench does it first)")
}

/** Compiles bench/{servers,clients,lib} to `outDir` (.bench/js); returns a resolver of child scripts. */
export const compileChildren = (root: string, outDir: string): (name: string) => string => {
  rmSync(outDir, { recursive: true, force: true })
  execFileSync(path.join(root, "node_modules/.bin/tsc"), ["-p", path.join(root, "bench/tsconfig.json")], {
    cwd: root,
    stdio: ["ignore", "inherit", "inherit"]
  })
  return (name) => {
    const script = path.join(outDir, `${name}.js`)
    if (!existsSync(script)) throw new Error(`benchmark child ${name} was not compiled (${script})`)
    return script
  }
}

// Bundled CommonJS code may call require() for Node built-ins.
const requireShim = "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);"

/**
 * The extra `--bundled` row: a child bundled into one file by esbuild (tree-shaken). Not the
 * shipped form: it is there to show what bundling changes (the old benchmark measured only this).
 */
export const bundleChild = async (script: string, outFile: string): Promise<string> => {
  const esbuild = await import("esbuild")
  await esbuild.build({
    entryPoints: [script],
    outfile: outFile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node22",
    banner: { js: requireShim },
    logLevel: "warning"
  })
  return outFile
}
