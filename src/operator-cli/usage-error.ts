/** A command line the CLI cannot run: printed with a hint, exit status 2. */
export class UsageError extends Error {}
