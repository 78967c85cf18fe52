/**
 * effect-smtp's server as servers/effect-smtp.ts, but importing by subpath
 * (`@effect/platform-node/NodeRuntime`, `effect/Layer`), so the two packages' indexes and
 * everything they re-export are not loaded. Only the idle-memory case runs it.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Layer from "effect/Layer"
import { BenchServer } from "./effect-smtp-app.ts"

NodeRuntime.runMain(Layer.launch(BenchServer))
