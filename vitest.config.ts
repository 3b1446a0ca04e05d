import { defineConfig } from 'vitest/config';

// Tests whose outcome depends on the proxy's own timing (an origin judged loaded or not, people counted behind a NAT
// before a rule fills, a flood held within seconds): run alone, after the rest, so that another file's load on the
// machine's two cores does not decide them. Each passes alone; beside a flood test in the other worker they failed.
const ALONE = ['test/filter-nat.test.ts', 'test/origin-endpoints-e2e.test.ts', 'test/origin-newcomers-e2e.test.ts', 'test/filter-default-gaps.test.ts'];

export default defineConfig({
  test: {
    // Tests start real servers and real timers; isolate them in forks.
    pool: 'forks',
    testTimeout: 30000,
    hookTimeout: 30000,
    maxWorkers: 2,
    projects: [
      { extends: true, test: { name: 'parallel', include: ['test/**/*.test.ts'], exclude: ALONE, fileParallelism: true, sequence: { groupOrder: 0 } } },
      { extends: true, test: { name: 'alone', include: ALONE, fileParallelism: false, sequence: { groupOrder: 1 } } },
    ],
  },
});
