/** Placeholder: replaced by the service start-up (PostgreSQL, Redis) in the integration setup. */
export default function setup(): void {}
