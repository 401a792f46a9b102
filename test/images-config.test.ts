import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseCommandLine, usage } from '../src/config.js';

function configOf(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const request = parseCommandLine(['--data-dir', 'data', ...argv], env);
  if (request.kind !== 'run') throw new Error(`expected a run, got ${request.kind}`);
  return request.config;
}

describe('--image-store and --max-imports', () => {
  it('default to DATA_DIR/images and 2', () => {
    const config = configOf([]);
    expect(config.imageStore).toBe(path.resolve('data/images'));
    expect(config.maxImports).toBe(2);
  });

  it('are read from NBDMUX_IMAGE_STORE and NBDMUX_MAX_IMPORTS, and a flag wins', () => {
    expect(configOf([], { NBDMUX_IMAGE_STORE: 'store', NBDMUX_MAX_IMPORTS: '5' })).toMatchObject({ imageStore: path.resolve('store'), maxImports: 5 });
    expect(configOf(['--image-store', '/srv/images', '--max-imports', '1'], { NBDMUX_IMAGE_STORE: 'store', NBDMUX_MAX_IMPORTS: '5' })).toMatchObject({ imageStore: '/srv/images', maxImports: 1 });
  });

  it.each([
    ['0', '--max-imports must be at least 1'],
    ['1.5', '--max-imports must be a whole number'],
    ['65', '--max-imports must be at most 64'],
  ])('refuses --max-imports %s', (value, message) => {
    expect(() => configOf(['--max-imports', value])).toThrow(new ConfigError(message));
  });

  it('are listed in --help', () => {
    expect(usage).toMatch(/--image-store DIR .*NBDMUX_IMAGE_STORE/);
    expect(usage).toMatch(/--max-imports N .*NBDMUX_MAX_IMPORTS/);
  });
});

describe('--import-tool-timeout', () => {
  it('defaults to 60 s; is read from its variable, and the flag wins', () => {
    expect(configOf([])).toMatchObject({ importToolTimeout: 60 });
    const env = { NBDMUX_IMPORT_TOOL_TIMEOUT: '5' };
    expect(configOf([], env)).toMatchObject({ importToolTimeout: 5 });
    expect(configOf(['--import-tool-timeout', '600'], env)).toMatchObject({ importToolTimeout: 600 });
  });

  it.each([
    [['--import-tool-timeout', '0'], '--import-tool-timeout must be at least 1 second'],
    [['--import-tool-timeout', '86401'], '--import-tool-timeout must be at most 86400 seconds'],
  ])('refuses %j', (argv, message) => {
    expect(() => configOf(argv)).toThrow(new ConfigError(message));
  });

  it('is listed in --help', () => {
    expect(usage).toMatch(/--import-tool-timeout S .*NBDMUX_IMPORT_TOOL_TIMEOUT/);
  });
});
