import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // The daemon under test is the built bin (npm test builds first), exactly what an operator runs.
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 30_000,
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
  },
});
