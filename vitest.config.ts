import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Tests start real servers and real timers; isolate them in forks.
    pool: 'forks',
    testTimeout: 30000,
    hookTimeout: 30000,
    fileParallelism: true,
    maxWorkers: 2,
  },
});
