import { Context } from "effect"
import type { ServerMeta } from "../domain/serverMeta.ts"

/** Who is answering: NODE_ID, REGION and the package version, reported in every envelope and usage row. */
export class ServerInfo extends Context.Service<ServerInfo, ServerMeta>()("tb/ServerInfo") {}
