/**
 * Running a Python snippet (for smtplib) with arguments passed as JSON, and reading back
 * the JSON it prints.
 */
import * as Effect from "effect/Effect"
import { describeRun, ProcessError, run } from "./process.ts"

// Every snippet runs after this: `args` holds the arguments, `done(x)` prints the result.
// smtplib's exceptions carry the server's reply, so they are reported rather than raised.
const prelude = `
import json, smtplib, ssl, sys
args = json.loads(sys.argv[1])
def done(result):
    print(json.dumps(result))
def reply(e):
    code = getattr(e, "smtp_code", None)
    text = getattr(e, "smtp_error", b"")
    return {"error": type(e).__name__, "code": code, "text": text.decode() if isinstance(text, bytes) else str(text)}
`

/** Runs the snippet with `python3` and parses the last line it printed as JSON. */
export const python = (
  snippet: string,
  args: Readonly<Record<string, unknown>>
): Effect.Effect<unknown, ProcessError> =>
  Effect.flatMap(run("python3", ["-c", prelude + snippet, JSON.stringify(args)]), (r) => {
    const last = r.stdout.trim().split("\n").at(-1) ?? ""
    if (r.code !== 0 || last === "") {
      return Effect.fail(new ProcessError({ message: `python3 failed: ${describeRun(r)}`, stdout: r.stdout, stderr: r.stderr }))
    }
    return Effect.try({
      try: () => JSON.parse(last) as unknown,
      catch: () => new ProcessError({ message: `python3 printed no JSON: ${describeRun(r)}`, stdout: r.stdout, stderr: r.stderr })
    })
  })
