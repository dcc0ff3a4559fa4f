import { Option } from "effect"
import { AppConfig, type AppConfigShape } from "../../src/config/AppConfig.ts"

/** AppConfig for in-process tests: embedded defaults, ports 0, overridable field by field. */
export const testAppConfig = (overrides: Partial<AppConfigShape> = {}) =>
  AppConfig.layerFrom({
    serverType: "APP_SERVER",
    databaseUrl: Option.none(),
    databaseReaderUrl: Option.none(),
    valkeyUrl: Option.none(),
    sqsQueueUrl: Option.none(),
    feeds: "simulated",
    lpoHttpPort: 0,
    lpoUdpPort: 0,
    lrsHttpPort: 0,
    lrsUdpPort: 0,
    bindHost: "127.0.0.1",
    dbSecretName: Option.none(),
    awsRegion: Option.none(),
    dataDir: "/tmp",
    nodeId: "test-node",
    region: "local",
    shutdownTimeoutMs: 5_000,
    lpoWorkers: 1,
    metricsPort: 0,
    cloudwatchNamespacePrefix: Option.none(),
    ...overrides
  })
