import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Fast start: nbd-server 3.24 spends 0.1-0.4 s of CPU at every start generating GnuTLS DH
 * parameters it never uses (see native/skip-dh-params.c). With one process per connection
 * that is most of every connection's set-up. The shim, preloaded into nbd-server processes
 * only, turns that one call into a no-op. It is used only after the dynamic loader itself has
 * shown, on the configured binary, that the shim binds and that nothing it skips is needed.
 */

/** Built by `npm run build` (scripts/build-native.mjs) from native/skip-dh-params.c. */
export const defaultShimPath = fileURLToPath(new URL('../../native/skip-dh-params.so', import.meta.url));
/**
 * Built from native/report-hooks.c and config-hooks.c: preloaded beside the shim, it runs each
 * connection's prerun and postrun in nbd-server instead of a shell, and answers the config's
 * unset options without building an error message for each. Optional: without it nbd-server
 * does both its own way, the same lines on the same pipe, a few milliseconds slower.
 */
export const defaultHooksPath = fileURLToPath(new URL('../../native/nbd-server-hooks.so', import.meta.url));

const skippedSymbol = 'gnutls_dh_params_generate2';
/** The ways a program hands generated DH parameters to GnuTLS; one of these means they are used. */
const parameterConsumers = ['gnutls_certificate_set_dh_params', 'gnutls_anon_set_server_dh_params', 'gnutls_psk_set_server_dh_params'];

export type FastStart = { enabled: true; env: Record<string, string> } | { enabled: false; reason: string };

interface Binding {
  file: string;
  target: string;
  symbol: string;
}

/**
 * Decides whether nbd-server processes can run with the shim. Runs `bin -V` twice with every
 * symbol bound at load (LD_BIND_NOW) and the loader reporting each binding: once plain, to see
 * that the program calls the function and that libgnutls provides it, and once with the shim,
 * to see every such call bound to the shim. `bin -V` exits before doing any work; both runs
 * together take tens of milliseconds. Never rejects: any doubt means starting the plain way.
 */
export async function detectFastStart(
  bin: string,
  shimPath = defaultShimPath,
  baseEnv: NodeJS.ProcessEnv = process.env,
  hooksPath = defaultHooksPath,
): Promise<FastStart> {
  if (!fs.existsSync(shimPath)) return off(`the shim ${shimPath} is missing: run npm run build (it needs a C compiler)`);

  const preload = [shimPath, ...(fs.existsSync(hooksPath) ? [hooksPath] : []), ...(baseEnv.LD_PRELOAD ? [baseEnv.LD_PRELOAD] : [])];
  const env = { LD_PRELOAD: preload.join(':') };
  const [plain, shimmed] = await Promise.all([loaderBindings(bin, baseEnv), loaderBindings(bin, { ...baseEnv, ...env })]);
  if (plain.error) return off(plain.error);
  const callers = plain.bindings.filter((b) => b.symbol === skippedSymbol);
  if (callers.length === 0) return off(`${bin} does not call ${skippedSymbol} (not nbd-server linked with GnuTLS?): nothing to skip`);
  const elsewhere = callers.find((b) => !/\/libgnutls[^/]*\.so/.test(b.target));
  if (elsewhere) return off(`${skippedSymbol} resolves to ${elsewhere.target}, not to libgnutls`);
  const callerFiles = new Set(callers.map((b) => b.file));
  const consumer = plain.bindings.find((b) => callerFiles.has(b.file) && parameterConsumers.includes(b.symbol));
  if (consumer) return off(`${bin} hands its DH parameters to GnuTLS (${consumer.symbol}), so they must be generated`);

  if (shimmed.error) return off(`with the shim preloaded: ${shimmed.error}`);
  const calls = shimmed.bindings.filter((b) => b.symbol === skippedSymbol);
  const missed = calls.find((b) => b.target !== shimPath);
  if (calls.length === 0 || missed) {
    const loaderError = /ERROR: ld\.so: [^\n]*/.exec(shimmed.output)?.[0];
    return off(`the shim does not bind for ${bin}: ${loaderError ?? `${skippedSymbol} still resolves to ${missed?.target ?? 'nothing'}`}`);
  }
  return { enabled: true, env };
}

/**
 * nbd-server never enables TLS without a key file in [generic] (STARTTLS is refused), and only
 * TLS could ever want DH parameters. A config that enables it must run nbd-server unchanged.
 */
export function configEnablesTls(configText: string): boolean {
  return /^\s*(keyfile|certfile)\s*=/m.test(configText);
}

function off(reason: string): FastStart {
  return { enabled: false, reason };
}

function loaderBindings(bin: string, env: NodeJS.ProcessEnv): Promise<{ bindings: Binding[]; output: string; error?: string }> {
  return new Promise((resolve) => {
    execFile(
      bin,
      ['-V'],
      { env: { ...env, LD_BIND_NOW: '1', LD_DEBUG: 'bindings' }, timeout: 10_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const output = `${stdout}${stderr}`;
        if (!/nbd-server version \S+/.test(output)) {
          const why = (err as NodeJS.ErrnoException | null)?.code ?? 'it printed no nbd-server version';
          return resolve({ bindings: [], output, error: `"${bin} -V" failed (${why})` });
        }
        const bindings: Binding[] = [];
        for (const line of output.split('\n')) {
          if (!line.includes('symbol `gnutls_')) continue;
          const match = /binding file (.+?) \[\d+\] to (.+?) \[\d+\]: normal symbol `([^']+)'/.exec(line);
          if (match) bindings.push({ file: match[1]!, target: match[2]!, symbol: match[3]! });
        }
        resolve({ bindings, output });
      },
    );
  });
}
