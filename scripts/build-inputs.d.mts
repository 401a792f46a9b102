/** The hash of everything a build is made of (see build-inputs.mjs). */
export function buildInputsHash(): string;
/** The hash the current dist/ was built from, or null when it has none. */
export function builtFrom(): string | null;
