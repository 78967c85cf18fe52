/**
 * The supervisor's count of each client's connections over all workers of `serve --workers`
 * (the processes themselves are in workers.test.ts).
 */
import { assert, describe, it } from "@effect/vitest"
import { ClientCounts } from "../../src/node/ClientCounts.ts"

describe("ClientCounts", () => {
  it("admits up to the limit per address, over all workers", () => {
    const counts = new ClientCounts(2)
    assert.isTrue(counts.admit(1, "192.0.2.1"))
    assert.isTrue(counts.admit(2, "192.0.2.1"))
    assert.isFalse(counts.admit(1, "192.0.2.1"), "the third, on either worker")
    assert.isFalse(counts.admit(2, "192.0.2.1"))
    assert.isTrue(counts.admit(2, "192.0.2.2"), "another address has its own count")
    assert.strictEqual(counts.count("192.0.2.1"), 2)
  })

  it("a release frees a place; a release not admitted changes nothing", () => {
    const counts = new ClientCounts(1)
    assert.isTrue(counts.admit(1, "192.0.2.1"))
    counts.release(2, "192.0.2.1") // worker 2 never admitted it
    assert.isFalse(counts.admit(1, "192.0.2.1"))
    counts.release(1, "192.0.2.1")
    counts.release(1, "192.0.2.1") // twice: the second is nothing
    assert.strictEqual(counts.count("192.0.2.1"), 0)
    assert.isTrue(counts.admit(2, "192.0.2.1"))
  })

  it("a worker that exits takes its connections with it, and only its own", () => {
    const counts = new ClientCounts(3)
    counts.admit(1, "192.0.2.1")
    counts.admit(1, "192.0.2.1")
    counts.admit(2, "192.0.2.1")
    counts.admit(1, "192.0.2.9")
    counts.forget(1)
    assert.strictEqual(counts.count("192.0.2.1"), 1)
    assert.strictEqual(counts.count("192.0.2.9"), 0)
    counts.release(1, "192.0.2.1") // a late release from the dead worker
    assert.strictEqual(counts.count("192.0.2.1"), 1)
    counts.release(2, "192.0.2.1")
    assert.strictEqual(counts.count("192.0.2.1"), 0)
  })
})
