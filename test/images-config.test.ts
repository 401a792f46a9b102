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
    expect(configOf([], { NBDMUX_IMAGE_STORE: 'store', NBDMUX_MAX_IMPORTS: '5' })).toMatchObject({
      imageStore: path.resolve('store'),
      maxImports: 5,
    });
    expect(
      configOf(['--image-store', '/srv/images', '--max-imports', '1'], { NBDMUX_IMAGE_STORE: 'store', NBDMUX_MAX_IMPORTS: '5' }),
    ).toMatchObject({ imageStore: '/srv/images', maxImports: 1 });
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

describe('--import-min-rate and --import-tool-timeout', () => {
  it('default to 65536 bytes (per 60 s) and 60 s; are read from their variables, and a flag wins', () => {
    expect(configOf([])).toMatchObject({ importMinRate: 65536, importToolTimeout: 60 });
    const env = { NBDMUX_IMPORT_MIN_RATE: '0', NBDMUX_IMPORT_TOOL_TIMEOUT: '5' };
    expect(configOf([], env)).toMatchObject({ importMinRate: 0, importToolTimeout: 5 });
    expect(configOf(['--import-min-rate', '1048576', '--import-tool-timeout', '600'], env)).toMatchObject({
      importMinRate: 1048576,
      importToolTimeout: 600,
    });
  });

  it.each([
    [['--import-min-rate=-1'], '--import-min-rate must be at least 0 bytes (0: no minimum)'],
    [['--import-min-rate', '1.5'], '--import-min-rate must be a whole number of bytes'],
    [['--import-tool-timeout', '0'], '--import-tool-timeout must be at least 1 second'],
    [['--import-tool-timeout', '86401'], '--import-tool-timeout must be at most 86400 seconds'],
  ])('refuses %j', (argv, message) => {
    expect(() => configOf(argv)).toThrow(new ConfigError(message));
  });

  it('are listed in --help', () => {
    expect(usage).toMatch(/--import-min-rate BYTES .*NBDMUX_IMPORT_MIN_RATE/);
    expect(usage).toMatch(/--import-tool-timeout S .*NBDMUX_IMPORT_TOOL_TIMEOUT/);
  });
});
