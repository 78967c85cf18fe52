/**
 * effect-smtp's server started the way the README shows: every module imported by its path
 * (`@effect/platform-node/NodeRuntime`, `effect/Layer`), `NodeRuntime.runMain(Layer.launch(…))`.
 * Usage (through the runner, which talks to it over IPC): node effect-smtp.js sink|hash [--connections N]
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Layer from "effect/Layer"
import { BenchServer } from "./effect-smtp-app.ts"

NodeRuntime.runMain(Layer.launch(BenchServer))
