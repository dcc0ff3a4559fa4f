/**
 * deploy/ checked against what the code reads: every file parses and renders; each ECS task
 * definition is one `aws ecs register-task-definition --cli-input-json` takes (Fargate), with the
 * environment its SERVER_TYPE needs and nothing the code does not know; the secret template holds
 * every key the Secrets service reads; the schedule, queue, dead-letter queue, event source mapping
 * and Lambdas are consistent with each other; and every IAM role holds exactly the actions its
 * programs use.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit } from "effect"
import { spawn, spawnSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { basename, join, relative } from "node:path"
import { appConfig, type AppConfigShape, SERVER_TYPES } from "../src/config/AppConfig.ts"
import { MESSAGE_MAX_BYTES } from "../src/layers/usage/UsageWriterSqs.ts"
import { SECRET_NAMES } from "../src/services/Secrets.ts"
import { healthcheckOf, parseDockerfile } from "../scripts/dockerfile.ts"
import { readsEnv, scanEnv } from "./support/envScan.ts"

const root = join(import.meta.dirname, "..")
const deploy = join(root, "deploy")
const scan = scanEnv(join(root, "src"))

// ---- Files ----

const walk = (dir: string): ReadonlyArray<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]))
const files = walk(deploy).map((f) => relative(deploy, f)).sort()
const jsonFiles = files.filter((f) => f.endsWith(".json"))
/** Each deploy file, parsed as written (placeholders are inside strings). */
const raw = new Map(jsonFiles.map((f) => [f, JSON.parse(readFileSync(join(deploy, f), "utf8")) as unknown]))

/** The placeholders docs/deploying.md explains, with a sample value each (what an operator exports before deploy/render.mjs). */
const SAMPLE: Record<string, string> = {
  ACCOUNT_ID: "123456789012",
  AWS_REGION: "us-east-1",
  IMAGE: "123456789012.dkr.ecr.us-east-1.amazonaws.com/trinity-beast:0.1.0",
  APP_SECRET_ARN: "arn:aws:secretsmanager:us-east-1:123456789012:secret:trinity-beast/app-AbCdEf",
  DATABASE_URL: "postgres://trinity.cluster-abc.us-east-1.rds.amazonaws.com:5432/trinity?sslmode=require",
  DATABASE_READER_URL: "postgres://trinity.cluster-ro-abc.us-east-1.rds.amazonaws.com:5432/trinity?sslmode=require",
  SES_FROM: "receipts@trinity.example",
  SES_IDENTITY: "trinity.example",
  LPO_ADMIN_URL: "http://internal-tb-lpo-123.us-east-1.elb.amazonaws.com",
  PRIVATE_SUBNET_1: "subnet-0aaa",
  PRIVATE_SUBNET_2: "subnet-0bbb",
  TASK_SECURITY_GROUP: "sg-0task",
  LAMBDA_SECURITY_GROUP: "sg-0lambda",
  SITE_ORIGIN: "https://trinity.example",
  RECEIPT_API_ID: "a1b2c3d4e5"
}
const placeholdersOf = (text: string) => [...text.matchAll(/\$\{([A-Za-z0-9_]+)\}/g)].map((m) => m[1]!)

/** Every JSON file rendered by deploy/render.mjs with the sample values (kept for the AWS CLI check, removed at exit). */
const renderedDir = mkdtempSync(join(tmpdir(), "tb-deploy-"))
process.once("exit", () => rmSync(renderedDir, { recursive: true, force: true }))
const rendered = (() => {
  const r = spawnSync(process.execPath, [join(deploy, "render.mjs"), renderedDir], { env: { ...SAMPLE, PATH: process.env["PATH"] ?? "" }, encoding: "utf8" })
  if (r.status !== 0) throw new Error(`render.mjs failed: ${r.stderr}`)
  return new Map(jsonFiles.map((f) => [f, JSON.parse(readFileSync(join(renderedDir, f), "utf8")) as unknown]))
})()
// oxlint-disable-next-line typescript/no-explicit-any -- deploy JSON is checked field by field below
const file = (name: string): any => {
  const parsed = rendered.get(name)
  if (parsed === undefined) throw new Error(`deploy/${name} is missing`)
  return parsed
}
const arnParts = (arn: string) => {
  const m = /^arn:aws:([a-z0-9-]+):([a-z0-9-]*):(\d*):(.+)$/.exec(arn)
  if (m === null) throw new Error(`not an ARN: ${arn}`)
  return { service: m[1]!, region: m[2]!, account: m[3]!, resource: m[4]! }
}

// ---- What the code says ----

/** SecretsLive.ts: the JSON keys of the DB_SECRET_NAME secret each secret may come from. */
const secretJsonKeys = (() => {
  const text = readFileSync(join(root, "src/layers/SecretsLive.ts"), "utf8")
  const block = /const SECRET_JSON_KEYS[^=]*=\s*\{([\s\S]*?)\n\}/.exec(text)?.[1] ?? ""
  const keys = new Map<string, ReadonlyArray<string>>()
  for (const m of block.matchAll(/([A-Z_]+):\s*\[([^\]]*)\]/g)) keys.set(m[1]!, [...m[2]!.matchAll(/"([^"]+)"/g)].map((k) => k[1]!))
  return keys
})()
/** Secret names the code asks the Secrets service for. */
const secretsRead = (() => {
  const read = new Set<string>()
  const srcFiles = walk(join(root, "src")).filter((f) => f.endsWith(".ts"))
  for (const f of srcFiles) for (const m of readFileSync(f, "utf8").matchAll(/\.get\(\s*"([A-Z_]+)"\s*\)/g)) if ((SECRET_NAMES as ReadonlyArray<string>).includes(m[1]!)) read.add(m[1]!)
  return read
})()
/** packageLambda.ts: the zips `npm run package:lambda` writes. */
const lambdaZips = [...readFileSync(join(root, "src/programs/packageLambda.ts"), "utf8").matchAll(/\{ name: "([a-z-]+)", entry: "([^"]+)" \}/g)].map((m) => m[1]!)
const imageHealthcheck = (() => {
  const dockerfile = parseDockerfile(readFileSync(join(root, "Dockerfile"), "utf8"))
  const instruction = dockerfile.stages.at(-1)!.instructions.find((i) => i.keyword === "HEALTHCHECK")!
  return healthcheckOf(instruction).command
})()

/** AppConfig parsed from an environment, as the program would at start. */
const configFrom = (env: Record<string, string>) =>
  Effect.runSyncExit(Effect.gen(function*() {
    return yield* appConfig
  }).pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord(env)))))
const configOf = (path: string, env: Record<string, string>): AppConfigShape => {
  const exit = configFrom(env)
  if (Exit.isFailure(exit)) throw new Error(`${path}: the configuration does not parse: ${String(exit.cause)}`)
  return exit.value
}

// ---- Fargate and ECS facts (AWS documentation) ----

/** Valid Fargate task cpu → memory (MiB) values. */
const FARGATE_MEMORY: Record<string, ReadonlyArray<number>> = {
  "256": [512, 1024, 2048],
  "512": [1024, 2048, 3072, 4096],
  "1024": Array.from({ length: 7 }, (_, i) => (i + 2) * 1024),
  "2048": Array.from({ length: 13 }, (_, i) => (i + 4) * 1024),
  "4096": Array.from({ length: 23 }, (_, i) => (i + 8) * 1024),
  "8192": Array.from({ length: 12 }, (_, i) => 16384 + i * 4096),
  "16384": Array.from({ length: 12 }, (_, i) => 32768 + i * 8192)
}
/** Top-level members of RegisterTaskDefinition's request. */
const TASK_DEFINITION_KEYS = new Set(["family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions", "volumes", "placementConstraints",
  "requiresCompatibilities", "cpu", "memory", "tags", "pidMode", "ipcMode", "proxyConfiguration", "inferenceAccelerators", "ephemeralStorage", "runtimePlatform", "enableFaultInjection"])
/** Members of a ContainerDefinition. */
const CONTAINER_KEYS = new Set(["name", "image", "repositoryCredentials", "cpu", "memory", "memoryReservation", "links", "portMappings", "essential", "restartPolicy",
  "entryPoint", "command", "environment", "environmentFiles", "mountPoints", "volumesFrom", "linuxParameters", "secrets", "dependsOn", "startTimeout", "stopTimeout",
  "versionConsistency", "hostname", "user", "workingDirectory", "disableNetworking", "privileged", "readonlyRootFilesystem", "dnsServers", "dnsSearchDomains",
  "extraHosts", "dockerSecurityOptions", "interactive", "pseudoTerminal", "dockerLabels", "ulimits", "logConfiguration", "healthCheck", "systemControls",
  "resourceRequirements", "firelensConfiguration", "credentialSpecs"])
/** Environment variables Lambda reserves (setting one fails create-function). */
const LAMBDA_RESERVED = new Set(["_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV", "AWS_LAMBDA_FUNCTION_NAME",
  "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
  "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR"])

/** Which server type each service runs (the spec's "Programs and modes"). */
const SERVICES: Record<string, { readonly serverType: (typeof SERVER_TYPES)[number] } | { readonly command: string }> = {
  BeastMain: { serverType: "APP_SERVER" },
  BeastMirror: { serverType: "APP_SERVER" },
  BeastLRS: { serverType: "REPORT_SERVER" },
  BeastWebhook: { serverType: "WEBHOOK_SERVER" },
  BeastSync: { command: "sync" }
}
const taskFiles = jsonFiles.filter((f) => f.startsWith("ecs/"))
const tasks = taskFiles.map((f) => ({ path: f, def: file(f) }))
const lambdaFunctions = jsonFiles.filter((f) => f.startsWith("lambda/")).map((f) => ({ path: f, fn: file(f) })).filter((l) => l.fn.Handler !== undefined)
type Container = { readonly environment: ReadonlyArray<{ name: string; value: string }>; readonly secrets?: ReadonlyArray<{ name: string; valueFrom: string }> }
const envOf = (c: Container): Record<string, string> => Object.fromEntries(c.environment.map((e) => [e.name, e.value]))
/** The environment the program sees: plain values, and secrets injected by ECS (a stand-in value of the right form). */
const programEnv = (c: Container): Record<string, string> => ({
  ...envOf(c),
  ...Object.fromEntries((c.secrets ?? []).map((s) => [s.name, s.name.endsWith("_URL") ? "rediss://:token@cache.example:6379" : "x".repeat(32)]))
})
const portsOf = (config: AppConfigShape, command: string): ReadonlyArray<string> => {
  if (command !== "serve") return []
  const lpo = ["ALL", "APP_SERVER", "APP_REPORT_SERVER"].includes(config.serverType)
  const lrs = ["ALL", "REPORT_SERVER", "APP_REPORT_SERVER"].includes(config.serverType)
  return [
    ...(lpo ? [`${config.lpoHttpPort}/tcp`, `${config.lpoUdpPort}/udp`] : []),
    ...(lrs ? [`${config.lrsHttpPort}/tcp`, `${config.lrsUdpPort}/udp`] : []),
    `${config.metricsPort}/tcp`
  ].sort()
}

describe("deploy/ files", () => {
  it("are JSON (plus the renderer), with only the placeholders docs/deploying.md explains", () => {
    expect(files.filter((f) => !f.endsWith(".json"))).toEqual(["render.mjs"])
    const docs = readFileSync(join(root, "docs/deploying.md"), "utf8")
    const used = new Set(jsonFiles.flatMap((f) => placeholdersOf(readFileSync(join(deploy, f), "utf8"))))
    expect([...used].sort()).toEqual(Object.keys(SAMPLE).sort())
    for (const name of used) expect(docs, `docs/deploying.md explains \${${name}}`).toContain(`\`${name}\``)
    expect(raw.size).toBe(jsonFiles.length)
  })

  it("render.mjs escapes values into JSON strings", () => {
    const out = mkdtempSync(join(tmpdir(), "tb-deploy-"))
    try {
      const tricky = "a \"quoted\" \\ value\nwith a newline"
      const r = spawnSync(process.execPath, [join(deploy, "render.mjs"), out, join(deploy, "lambda/receipt.json")], {
        env: { ...SAMPLE, SES_FROM: tricky, PATH: process.env["PATH"] ?? "" }, encoding: "utf8"
      })
      expect(r.status, r.stderr).toBe(0)
      expect(JSON.parse(readFileSync(join(out, "lambda/receipt.json"), "utf8")).Environment.Variables.SES_FROM).toBe(tricky)
    } finally {
      rmSync(out, { recursive: true, force: true })
    }
  })

  it("render.mjs refuses to render with a placeholder's variable unset, naming it", () => {
    const { IMAGE: _, ...withoutImage } = SAMPLE
    const out = mkdtempSync(join(tmpdir(), "tb-deploy-"))
    try {
      const r = spawnSync(process.execPath, [join(deploy, "render.mjs"), out], { env: { ...withoutImage, PATH: process.env["PATH"] ?? "" }, encoding: "utf8" })
      expect(r.status).toBe(2)
      expect(r.stderr).toContain("IMAGE is not set (used by ecs/")
    } finally {
      rmSync(out, { recursive: true, force: true })
    }
  })
})

describe("ECS task definitions (deploy/ecs)", () => {
  it("are the four services and the sync task, one file per family", () => {
    expect(tasks.map((t) => t.def.family).sort()).toEqual(Object.keys(SERVICES).sort())
    for (const t of tasks) expect(basename(t.path, ".json")).toBe(t.def.family)
  })

  it.each(taskFiles)("%s is what register-task-definition takes for Fargate", (path) => {
    const def = file(path)
    for (const key of Object.keys(def)) expect(TASK_DEFINITION_KEYS, `${path}: ${key}`).toContain(key)
    expect(def.family).toMatch(/^[A-Za-z0-9_-]{1,255}$/)
    expect(def.requiresCompatibilities).toEqual(["FARGATE"])
    expect(def.networkMode).toBe("awsvpc")
    expect(typeof def.cpu).toBe("string")
    expect(typeof def.memory).toBe("string")
    expect(FARGATE_MEMORY[def.cpu], `${path}: cpu ${def.cpu}`).toBeDefined()
    expect(FARGATE_MEMORY[def.cpu], `${path}: cpu ${def.cpu} with memory ${def.memory}`).toContain(Number(def.memory))
    expect(def.runtimePlatform).toEqual({ cpuArchitecture: "X86_64", operatingSystemFamily: "LINUX" })
    expect(def.containerDefinitions).toHaveLength(1)
    const c = def.containerDefinitions[0]
    for (const key of Object.keys(c)) expect(CONTAINER_KEYS, `${path}: containerDefinitions[0].${key}`).toContain(key)
    expect(c.name).toMatch(/^[A-Za-z0-9_-]{1,255}$/)
    expect(c.image).toBe(SAMPLE["IMAGE"])
    expect(c.essential).toBe(true)
    // The execution role pulls from ECR, writes awslogs and injects `secrets`: required for each.
    expect(arnParts(def.executionRoleArn)).toMatchObject({ service: "iam", account: SAMPLE["ACCOUNT_ID"] })
    expect(c.logConfiguration.logDriver).toBe("awslogs")
    expect(c.logConfiguration.options).toMatchObject({ "awslogs-group": `/trinity-beast/${def.family}`, "awslogs-region": SAMPLE["AWS_REGION"] })
    expect(c.logConfiguration.options["awslogs-stream-prefix"]).toBeTruthy()
    const names = c.environment.map((e: { name: string }) => e.name)
    expect(new Set(names).size, `${path}: no variable twice`).toBe(names.length)
    for (const e of c.environment) expect(typeof e.value, `${path}: ${e.name} is a string`).toBe("string")
  })

  it.each(taskFiles)("%s sets only variables the code reads, with values it accepts", (path) => {
    const c = file(path).containerDefinitions[0]
    const set = [...c.environment.map((e: { name: string }) => e.name), ...(c.secrets ?? []).map((s: { name: string }) => s.name)]
    for (const name of set) expect(readsEnv(scan, name), `${path}: ${name} is read nowhere in src/`).toBe(true)
    const inBoth = c.environment.filter((e: { name: string }) => (c.secrets ?? []).some((s: { name: string }) => s.name === e.name))
    expect(inBoth).toEqual([])
    const config = configFrom(programEnv(c))
    expect(Exit.isSuccess(config), `${path}: ${Exit.isFailure(config) ? String(config.cause) : ""}`).toBe(true)
  })

  it.each(taskFiles)("%s runs what its name says, listens where its ports are mapped, and is health-checked", (path) => {
    const def = file(path)
    const c = def.containerDefinitions[0]
    const service = SERVICES[def.family]!
    const env = envOf(c)
    const config = configOf(path, programEnv(c))
    if ("serverType" in service) {
      expect(c.command).toEqual(["serve"])
      expect(env["SERVER_TYPE"]).toBe(service.serverType)
      expect(config.serverType).toBe(service.serverType)
      expect(c.healthCheck.command).toEqual(["CMD", ...imageHealthcheck])
      expect(c.healthCheck.interval).toBeGreaterThanOrEqual(5)
      expect(c.healthCheck.interval).toBeLessThanOrEqual(300)
      expect(c.healthCheck.timeout).toBeGreaterThanOrEqual(2)
      expect(c.healthCheck.timeout).toBeLessThan(c.healthCheck.interval)
      expect(c.healthCheck.retries).toBeGreaterThanOrEqual(1)
      expect(c.healthCheck.retries).toBeLessThanOrEqual(10)
      expect(c.healthCheck.startPeriod).toBeLessThanOrEqual(300)
    } else {
      expect(c.command[0]).toBe(service.command)
      expect(env["SERVER_TYPE"]).toBeUndefined()
      // A one-off task: nothing to probe, and an unhealthy mark would only stop it early.
      expect(c.healthCheck).toBeUndefined()
    }
    for (const m of c.portMappings) {
      expect(m.hostPort, `${path}: awsvpc maps a port to itself`).toBe(m.containerPort)
      expect(["tcp", "udp"]).toContain(m.protocol)
    }
    expect(c.portMappings.map((m: { containerPort: number; protocol: string }) => `${m.containerPort}/${m.protocol}`).sort()).toEqual(portsOf(config, c.command[0]))
  })

  it.each(taskFiles)("%s lets a clean shutdown finish before ECS kills the task", (path) => {
    const c = file(path).containerDefinitions[0]
    const config = configOf(path, programEnv(c))
    expect(Number.isInteger(c.stopTimeout)).toBe(true)
    expect(c.stopTimeout).toBeLessThanOrEqual(120)
    // cli.ts's watchdog exits SHUTDOWN_TIMEOUT_MS + 1 s after SIGTERM; SIGKILL must come later.
    expect(c.stopTimeout * 1000).toBeGreaterThan(config.shutdownTimeoutMs + 1000)
  })
})

describe("the application secret (deploy/secrets/trinity-beast-app.json)", () => {
  const template = file("secrets/trinity-beast-app.json") as Record<string, string>
  it("holds a key for every secret the code reads through the Secrets service", () => {
    expect(secretsRead.size).toBeGreaterThan(0)
    for (const name of secretsRead) {
      const keys = secretJsonKeys.get(name)
      expect(keys, `SecretsLive.ts maps ${name}`).toBeDefined()
      expect(keys!.some((k) => k in template), `${name}: one of ${keys!.join(", ")}`).toBe(true)
    }
  })

  it("holds nothing else than those and the keys task definitions inject", () => {
    const injected = tasks.flatMap((t) => (t.def.containerDefinitions[0].secrets ?? []).map((s: { valueFrom: string }) => s.valueFrom))
    const injectedKeys = injected.map((v: string) => {
      expect(v.startsWith(`${SAMPLE["APP_SECRET_ARN"]}:`), v).toBe(true)
      const [key, stage, version] = v.slice(SAMPLE["APP_SECRET_ARN"]!.length + 1).split(":")
      expect([stage, version]).toEqual(["", ""])
      return key!
    })
    for (const key of injectedKeys) expect(template, `ECS injects ${key}`).toHaveProperty(key)
    const codeKeys = [...secretsRead].flatMap((n) => secretJsonKeys.get(n) ?? [])
    for (const key of Object.keys(template)) expect([...codeKeys, ...injectedKeys], `${key} is read`).toContain(key)
  })

  it("is the one DB_SECRET_NAME every program reads", () => {
    const names = new Set([
      ...tasks.map((t) => envOf(t.def.containerDefinitions[0])["DB_SECRET_NAME"]),
      ...lambdaFunctions.map((l) => l.fn.Environment.Variables["DB_SECRET_NAME"])
    ])
    expect([...names]).toEqual(["trinity-beast/app"])
    expect(arnParts(SAMPLE["APP_SECRET_ARN"]!).resource).toMatch(/^secret:trinity-beast\/app-/)
  })
})

const queue = file("sqs/usage-queue.json")
const dlq = file("sqs/usage-dlq.json")
const queueArn = (q: { QueueName: string }) => `arn:aws:sqs:${SAMPLE["AWS_REGION"]}:${SAMPLE["ACCOUNT_ID"]}:${q.QueueName}`
const esm = file("lambda/queued-writer-event-source-mapping.json")
const writer = file("lambda/queued-writer.json")

describe("the usage queue, its dead-letter queue and the queued writer", () => {
  it("redrives to the dead-letter queue, which accepts only this queue's messages and keeps them longer", () => {
    const redrive = JSON.parse(queue.Attributes.RedrivePolicy)
    expect(redrive.deadLetterTargetArn).toBe(queueArn(dlq))
    expect(redrive.maxReceiveCount).toBeGreaterThanOrEqual(1)
    expect(redrive.maxReceiveCount).toBeLessThanOrEqual(1000)
    expect(JSON.parse(dlq.Attributes.RedriveAllowPolicy)).toEqual({ redrivePermission: "byQueue", sourceQueueArns: [queueArn(queue)] })
    expect(Number(dlq.Attributes.MessageRetentionPeriod)).toBeGreaterThan(Number(queue.Attributes.MessageRetentionPeriod))
    for (const q of [queue, dlq]) expect(Number(q.Attributes.MaximumMessageSize)).toBeGreaterThanOrEqual(MESSAGE_MAX_BYTES)
  })

  it("hides a received batch for at least 6× the Lambda timeout plus the batching window", () => {
    expect(Number(queue.Attributes.VisibilityTimeout)).toBeGreaterThanOrEqual(6 * writer.Timeout + (esm.MaximumBatchingWindowInSeconds ?? 0))
  })

  it("feeds the queued writer through an event source mapping that reports batch item failures", () => {
    expect(esm.EventSourceArn).toBe(queueArn(queue))
    expect(esm.FunctionName).toBe(writer.FunctionName)
    expect(esm.FunctionResponseTypes).toEqual(["ReportBatchItemFailures"])
    expect(esm.BatchSize).toBeGreaterThanOrEqual(10)
    expect(esm.BatchSize).toBeLessThanOrEqual(10_000)
  })

  it("is where every serving task sends its usage rows", () => {
    const url = `https://sqs.${SAMPLE["AWS_REGION"]}.amazonaws.com/${SAMPLE["ACCOUNT_ID"]}/${queue.QueueName}`
    for (const t of tasks) {
      const env = envOf(t.def.containerDefinitions[0])
      if (t.def.containerDefinitions[0].command[0] === "serve") expect(env["SQS_QUEUE_URL"], t.path).toBe(url)
      else expect(env["SQS_QUEUE_URL"], t.path).toBeUndefined()
    }
  })
})

describe("Lambda functions (deploy/lambda)", () => {
  it("are the zips npm run package:lambda writes, handler index.handler on Node.js 22 or later", () => {
    expect(lambdaFunctions.map((l) => basename(l.path, ".json")).sort()).toEqual([...lambdaZips].sort())
    for (const { path, fn } of lambdaFunctions) {
      expect(fn.Handler, path).toBe("index.handler")
      expect(Number(/^nodejs(\d+)\.x$/.exec(fn.Runtime)?.[1]), path).toBeGreaterThanOrEqual(22)
      expect(arnParts(fn.Role).resource).toMatch(/^role\//)
    }
  })

  it("set only variables the code reads and Lambda allows", () => {
    for (const { path, fn } of lambdaFunctions) {
      for (const name of Object.keys(fn.Environment.Variables)) {
        expect(readsEnv(scan, name), `${path}: ${name}`).toBe(true)
        expect(LAMBDA_RESERVED.has(name), `${path}: ${name} is reserved by Lambda`).toBe(false)
      }
      expect(Exit.isSuccess(configFrom(fn.Environment.Variables)), path).toBe(true)
    }
  })

  it("put the receipt function behind an HTTP API allowed to invoke it", () => {
    const api = file("lambda/receipt-api.json")
    const permission = file("lambda/receipt-invoke-permission.json")
    const receipt = file("lambda/receipt.json")
    expect(api.ProtocolType).toBe("HTTP")
    expect(api.Target).toBe(`arn:aws:lambda:${SAMPLE["AWS_REGION"]}:${SAMPLE["ACCOUNT_ID"]}:function:${receipt.FunctionName}`)
    expect(permission).toMatchObject({ FunctionName: receipt.FunctionName, Action: "lambda:InvokeFunction", Principal: "apigateway.amazonaws.com" })
    expect(permission.SourceArn).toBe(`arn:aws:execute-api:${SAMPLE["AWS_REGION"]}:${SAMPLE["ACCOUNT_ID"]}:${SAMPLE["RECEIPT_API_ID"]}/*/*`)
  })
})

describe("the nightly sync schedule (deploy/scheduler/nightly-sync.json)", () => {
  const schedule = file("scheduler/nightly-sync.json")
  it("runs the sync task at 1 AM US Eastern, daylight saving included", () => {
    expect(schedule.ScheduleExpression).toBe("cron(0 1 * * ? *)")
    expect(schedule.ScheduleExpressionTimezone).toBe("America/New_York")
    expect(schedule.FlexibleTimeWindow).toEqual({ Mode: "OFF" })
    expect(schedule.State).toBe("ENABLED")
    const sync = tasks.find((t) => t.def.containerDefinitions[0].command[0] === "sync")!
    expect(schedule.Target.EcsParameters.TaskDefinitionArn).toBe(`arn:aws:ecs:${SAMPLE["AWS_REGION"]}:${SAMPLE["ACCOUNT_ID"]}:task-definition/${sync.def.family}`)
    expect(schedule.Target.EcsParameters).toMatchObject({ LaunchType: "FARGATE", TaskCount: 1 })
    expect(schedule.Target.EcsParameters.NetworkConfiguration.awsvpcConfiguration.Subnets.length).toBeGreaterThan(0)
    expect(arnParts(schedule.Target.Arn)).toMatchObject({ service: "ecs", resource: "cluster/trinity-beast" })
  })
})

// ---- IAM ----

interface Statement {
  readonly Effect: string
  readonly Action: string | ReadonlyArray<string>
  readonly Resource: string | ReadonlyArray<string>
  readonly Condition?: Record<string, Record<string, string | ReadonlyArray<string>>>
}
const roles = file("iam/roles.json") as Record<string, { trust: string; policies: ReadonlyArray<string>; managedPolicies?: ReadonlyArray<string> }>
const statementsOf = (role: string): ReadonlyArray<Statement> =>
  roles[role]!.policies.flatMap((p) => (file(`iam/${p}.json`).Statement as ReadonlyArray<Statement>))
const list = (v: string | ReadonlyArray<string>) => (typeof v === "string" ? [v] : v)
const grants = (role: string) => new Set(statementsOf(role).flatMap((s) => list(s.Action)))
const resourcesFor = (role: string, action: string) => statementsOf(role).filter((s) => list(s.Action).includes(action)).flatMap((s) => list(s.Resource))
const roleName = (arn: string) => arnParts(arn).resource.replace(/^role\//, "")
const SECRET_RESOURCE = `arn:aws:secretsmanager:${SAMPLE["AWS_REGION"]}:${SAMPLE["ACCOUNT_ID"]}:secret:trinity-beast/app-??????`

/** What each role's programs call, worked out from the deploy files (who sends, who consumes, who publishes…). */
const needed = (() => {
  const need = new Map<string, Set<string>>(Object.keys(roles).map((r) => [r, new Set<string>()]))
  const add = (role: string, ...actions: ReadonlyArray<string>) => {
    expect(need.has(role), `${role} is in iam/roles.json`).toBe(true)
    for (const a of actions) need.get(role)!.add(a)
  }
  const programNeeds = (role: string, env: Record<string, string>) => {
    if (env["SQS_QUEUE_URL"] !== undefined) add(role, "sqs:SendMessage")
    if (env["DB_SECRET_NAME"] !== undefined) add(role, "secretsmanager:GetSecretValue")
    if (env["CLOUDWATCH_NAMESPACE_PREFIX"] !== undefined) add(role, "cloudwatch:PutMetricData")
    if (env["SES_FROM"] !== undefined) add(role, "ses:SendEmail")
  }
  for (const { def } of tasks) {
    const c = def.containerDefinitions[0]
    programNeeds(roleName(def.taskRoleArn), envOf(c))
    add(roleName(def.executionRoleArn), "ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage", "logs:CreateLogStream", "logs:PutLogEvents")
    if ((c.secrets ?? []).length > 0) add(roleName(def.executionRoleArn), "secretsmanager:GetSecretValue")
  }
  for (const { fn } of lambdaFunctions) {
    programNeeds(roleName(fn.Role), fn.Environment.Variables)
    // The event source mapping polls with the function's role.
    if (esm.FunctionName === fn.FunctionName) add(roleName(fn.Role), "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
  }
  add(roleName(file("scheduler/nightly-sync.json").Target.RoleArn), "ecs:RunTask", "iam:PassRole")
  return need
})()

describe("IAM (deploy/iam)", () => {
  it("gives every role exactly the actions its programs use", () => {
    for (const [role, actions] of needed) expect([...grants(role)].sort(), role).toEqual([...actions].sort())
  })

  it("lets the LPO send usage rows but not consume them, and the queued writer consume but not send", () => {
    const lpo = roleName(file("ecs/BeastMain.json").taskRoleArn)
    expect(grants(lpo).has("sqs:SendMessage")).toBe(true)
    for (const a of ["sqs:ReceiveMessage", "sqs:DeleteMessage"]) expect(grants(lpo).has(a), a).toBe(false)
    const consumer = roleName(writer.Role)
    for (const a of ["sqs:ReceiveMessage", "sqs:DeleteMessage"]) expect(grants(consumer).has(a), a).toBe(true)
    expect(grants(consumer).has("sqs:SendMessage")).toBe(false)
  })

  it("scopes every grant to the resources it is for", () => {
    for (const role of Object.keys(roles)) {
      for (const s of statementsOf(role)) {
        expect(s.Effect).toBe("Allow")
        for (const a of list(s.Action)) expect(a, `${role}: no wildcard actions`).toMatch(/^[a-z0-9-]+:[A-Za-z]+$/)
      }
      for (const a of grants(role)) {
        const resources = resourcesFor(role, a)
        if (a.startsWith("sqs:")) expect(resources, `${role} ${a}`).toEqual([queueArn(queue)])
        if (a.startsWith("secretsmanager:")) expect(resources, `${role} ${a}`).toEqual([SECRET_RESOURCE])
        if (a === "cloudwatch:PutMetricData") {
          const conditions = statementsOf(role).filter((s) => list(s.Action).includes(a)).map((s) => s.Condition)
          const prefixes = new Set(tasks.map((t) => envOf(t.def.containerDefinitions[0])["CLOUDWATCH_NAMESPACE_PREFIX"]).filter((p) => p !== undefined))
          expect(conditions, role).toEqual([...prefixes].map((p) => ({ StringLike: { "cloudwatch:namespace": `${p}/*` } })))
        }
        // Only actions without resource-level permissions may name every resource.
        if (!["ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"].includes(a)) expect(resources, `${role} ${a}`).not.toContain("*")
      }
    }
    const scheduler = roleName(file("scheduler/nightly-sync.json").Target.RoleArn)
    const sync = tasks.find((t) => t.def.containerDefinitions[0].command[0] === "sync")!.def
    expect(resourcesFor(scheduler, "iam:PassRole").sort()).toEqual([sync.executionRoleArn, sync.taskRoleArn].sort())
    expect(resourcesFor(scheduler, "ecs:RunTask")).toContain(`arn:aws:ecs:${SAMPLE["AWS_REGION"]}:${SAMPLE["ACCOUNT_ID"]}:task-definition/${sync.family}:*`)
    const logGroups = resourcesFor(roleName(sync.executionRoleArn), "logs:PutLogEvents")
    expect(logGroups).toEqual([`arn:aws:logs:${SAMPLE["AWS_REGION"]}:${SAMPLE["ACCOUNT_ID"]}:log-group:/trinity-beast/*:log-stream:*`])
  })

  it("trusts the right service with each role, and every role and policy file is used", () => {
    const trustOf = (role: string) => file(`iam/${roles[role]!.trust}`).Statement[0].Principal.Service as string
    for (const { def } of tasks) for (const arn of [def.taskRoleArn, def.executionRoleArn]) expect(trustOf(roleName(arn))).toBe("ecs-tasks.amazonaws.com")
    for (const { fn } of lambdaFunctions) expect(trustOf(roleName(fn.Role))).toBe("lambda.amazonaws.com")
    expect(trustOf(roleName(file("scheduler/nightly-sync.json").Target.RoleArn))).toBe("scheduler.amazonaws.com")
    // Every trust is limited to this account (the confused-deputy guard).
    for (const trust of new Set(Object.values(roles).map((r) => r.trust))) {
      expect(file(`iam/${trust}`).Statement[0].Condition?.StringEquals?.["aws:SourceAccount"], trust).toBe(SAMPLE["ACCOUNT_ID"])
    }
    const usedRoles = new Set([
      ...tasks.flatMap((t) => [roleName(t.def.taskRoleArn), roleName(t.def.executionRoleArn)]),
      ...lambdaFunctions.map((l) => roleName(l.fn.Role)),
      roleName(file("scheduler/nightly-sync.json").Target.RoleArn)
    ])
    expect([...usedRoles].sort()).toEqual(Object.keys(roles).sort())
    const policyFiles = jsonFiles.filter((f) => f.startsWith("iam/") && f.endsWith("-policy.json")).map((f) => basename(f, ".json"))
    expect(new Set(Object.values(roles).flatMap((r) => r.policies))).toEqual(new Set(policyFiles))
  })
})

/**
 * The AWS CLI's own check of each file against the service's API model (botocore validates member
 * names, types and required members before sending). The endpoint is a closed local port, so a
 * file that passes ends at "Could not connect"; nothing reaches AWS and no credentials are read.
 */
const AWS_CALLS: ReadonlyArray<readonly [string, ReadonlyArray<string>]> = [
  ...taskFiles.map((f) => [f, ["ecs", "register-task-definition"]] as const),
  ["sqs/usage-dlq.json", ["sqs", "create-queue"]],
  ["sqs/usage-queue.json", ["sqs", "create-queue"]],
  ...lambdaFunctions.map((l) => [l.path, ["lambda", "create-function", "--zip-file", "fileb://EMPTY_ZIP"]] as const),
  ["lambda/queued-writer-event-source-mapping.json", ["lambda", "create-event-source-mapping"]],
  ["lambda/receipt-api.json", ["apigatewayv2", "create-api"]],
  ["lambda/receipt-invoke-permission.json", ["lambda", "add-permission"]],
  ["scheduler/nightly-sync.json", ["scheduler", "create-schedule"]]
]
const hasAwsCli = spawnSync("aws", ["--version"]).status === 0
describe("the AWS CLI's parameter validation", () => {
  it.skipIf(!hasAwsCli)("accepts every file as the input of its call", async () => {
    const emptyZip = join(renderedDir, "empty.zip")
    writeFileSync(emptyZip, Buffer.from([0x50, 0x4b, 0x05, 0x06, ...Array<number>(18).fill(0)]))
    const env = {
      PATH: process.env["PATH"] ?? "", HOME: renderedDir, AWS_ACCESS_KEY_ID: "AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY: "example", AWS_DEFAULT_REGION: SAMPLE["AWS_REGION"]!,
      AWS_CONFIG_FILE: "/dev/null", AWS_SHARED_CREDENTIALS_FILE: "/dev/null", AWS_EC2_METADATA_DISABLED: "true", AWS_MAX_ATTEMPTS: "1"
    }
    const results = await Promise.all(AWS_CALLS.map(([path, call]) =>
      new Promise<string>((done) => {
        const args = [...call.map((a) => a.replace("EMPTY_ZIP", emptyZip)), "--cli-input-json", `file://${join(renderedDir, path)}`, "--endpoint-url", "http://127.0.0.1:9", "--cli-connect-timeout", "2"]
        const child = spawn("aws", args, { env })
        let out = ""
        child.stdout.on("data", (b: Buffer) => (out += b.toString()))
        child.stderr.on("data", (b: Buffer) => (out += b.toString()))
        child.on("exit", () => done(`${path}: ${out.trim().split("\n").slice(-3).join(" ")}`))
      })))
    for (const result of results) expect(result).toMatch(/Could not connect to the endpoint URL/)
    expect(AWS_CALLS.map(([path]) => path).sort()).toEqual(jsonFiles.filter((f) => !f.startsWith("iam/") && !f.startsWith("secrets/")).sort())
  }, 60_000)
})

describe("the env scanner (test/support/envScan.ts)", () => {
  it("finds variables read each way the code reads them", () => {
    for (const name of ["SERVER_TYPE", "METRICS_PORT", "CLOUDWATCH_NAMESPACE_PREFIX", "LOG_LEVEL", "QUEUED_WRITER_RECEIVERS", "FORCE_FULL_SYNC", "SES_FROM", "DB_SECRET_NAME", "ADMIN_TOKEN", "SHUTDOWN_TIMEOUT_MS"]) {
      expect(scan.names.has(name), name).toBe(true)
    }
    expect(readsEnv(scan, "FEED_URL_OKX")).toBe(true)
    expect(readsEnv(scan, "OTEL_EXPORTER_OTLP_ENDPOINT")).toBe(true)
    // Literal values are not names.
    for (const value of ["ALL", "APP_SERVER", "Info", "FEED_URL_"]) expect(readsEnv(scan, value), value).toBe(false)
    expect(readsEnv(scan, "SERVER_TYP")).toBe(false)
  })
})
