import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseCommandLine, renderFlagsReference, usage } from '../src/config.js';
import { options } from '../src/options.js';

/** The daemon's settings are one table (src/options.ts): the parser, --help and the reference page all come from it. */
describe('the option table', () => {
  it('is what docs/reference/server-flags.md says, word for word (npm run docs rewrites it)', () => {
    expect(fs.readFileSync('docs/reference/server-flags.md', 'utf8')).toBe(renderFlagsReference());
  });

  it.each(Object.entries(options).flatMap(([key, spec]) => ('flag' in spec ? [[key, spec.flag, spec.env] as const] : [])))(
    'takes %s from --%s and from %s, and lists both in --help',
    (key, flag, env) => {
      // Whatever the value makes of it, a flag the parser did not know would be "Unknown option".
      const asFlag = () => parseCommandLine(['--data-dir', '/tmp/x', `--${flag}`, '1'], {});
      const asEnv = () => parseCommandLine(['--data-dir', '/tmp/x'], { [env]: '1' });
      for (const parse of [asFlag, asEnv]) {
        try {
          const request = parse();
          expect(request.kind).toBe('run');
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError);
          expect((err as Error).message).not.toMatch(/Unknown option/);
          expect((err as Error).message).toContain(key === 'dataDir' ? '--data-dir' : `--${flag}`);
        }
      }
      expect(usage).toMatch(new RegExp(`^  --${flag} .*${env}`, 'm'));
    },
  );

  it('refuses a flag that is not in it, naming it', () => {
    expect(() => parseCommandLine(['--data-dir', '/tmp/x', '--no-such-flag'], {})).toThrow(/--no-such-flag.*\(see --help\)/);
  });
});
