/** Who is answering: NODE_ID, REGION and the package version, reported in every envelope and usage row. */
export interface ServerMeta {
  readonly node: string
  readonly region: string
  readonly version: string
}
