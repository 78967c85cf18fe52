/**
 * effect-smtp's server started the way the README shows: `NodeRuntime` from the
 * `@effect/platform-node` index, `Layer` from the `effect` index, `NodeRuntime.runMain(Layer.launch(…))`.
 * Usage (through the runner, which talks to it over IPC): node effect-smtp.js sink|hash [--connections N]
 */
import { Layer } from "effect"
import { NodeRuntime } from "@effect/platform-node"
import { BenchServer } from "./effect-smtp-app.ts"

NodeRuntime.runMain(Layer.launch(BenchServer))
