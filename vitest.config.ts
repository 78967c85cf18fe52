import * as path from "node:path"
import { defineConfig } from "vitest/config"

export default defineConfig({
  // The examples import the package by name, as users do: here that is the sources.
  resolve: { alias: [{ find: /^effect-smtp\/(.*)$/, replacement: path.resolve(import.meta.dirname, "src/$1.ts") }] },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
