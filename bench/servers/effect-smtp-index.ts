/**
 * effect-smtp's server as servers/effect-smtp.ts, but importing NodeRuntime and Layer from the
 * two packages' indexes (`import { Layer } from "effect"`), which load everything they
 * re-export. Only the idle-memory case runs it, to show what that costs.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Layer } from "effect"
import { BenchServer } from "./effect-smtp-app.ts"

NodeRuntime.runMain(Layer.launch(BenchServer))
