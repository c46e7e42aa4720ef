// Type-checked lint for the whole project; prettier owns formatting.
import tseslint from 'typescript-eslint';

/**
 * Module boundaries. A module (a folder of src/) is imported only through its index.ts, its public face;
 * shared/ is the exception: its files are independent leaves (none imports a module), imported one by
 * one so the exec shim's own bundle stays small (its start is measured by bench:start). Imports flow one
 * way: shared ← allocator, membership, election ← frameworks ← cluster ← runtime ← api ← node ← cli. ui/ is the
 * dashboard, bundled for the browser on its own (scripts/build.mjs): it takes the API's types, no code.
 */
const modules = [
  'allocator',
  'api',
  'cli',
  'cluster',
  'election',
  'frameworks',
  'membership',
  'node',
  'runtime',
  'shared',
  'ui',
];
/** What each module may not import at all (besides the internals of any other module). */
const forbidden = {
  shared: modules.filter((name) => name !== 'shared'),
  allocator: ['api', 'cli', 'cluster', 'election', 'frameworks', 'membership', 'node', 'runtime', 'ui'],
  frameworks: ['api', 'cli', 'cluster', 'election', 'membership', 'node', 'runtime', 'ui'],
  membership: ['api', 'cli', 'cluster', 'election', 'frameworks', 'node', 'runtime', 'ui'],
  election: ['api', 'cli', 'cluster', 'frameworks', 'membership', 'node', 'runtime', 'ui'],
  cluster: ['api', 'cli', 'election', 'membership', 'node', 'runtime', 'ui'],
  runtime: ['api', 'cli', 'node', 'ui'],
  api: ['cli', 'node', 'ui'],
  node: ['cli', 'ui'],
  cli: ['ui'],
  ui: ['allocator', 'cli', 'cluster', 'election', 'frameworks', 'membership', 'node', 'runtime'],
};

/** Import patterns (gitignore syntax) that reach into another module from `depth` folders below src/. */
function boundaryPatterns(module, depth) {
  const up = '../'.repeat(depth);
  return [
    {
      group: modules
        .filter((name) => name !== module && name !== 'shared')
        .flatMap((name) => [`${up}${name}/**`, `!${up}${name}/index.ts`]),
      message: "Import another module only through its index.ts (see eslint.config.js's module boundaries).",
    },
    ...(forbidden[module].length === 0
      ? []
      : [
          {
            group: forbidden[module].map((name) => `${up}${name}/**`),
            message: `src/${module} may not import these modules: imports flow one way (see eslint.config.js).`,
          },
        ]),
  ];
}

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', '.tmp/', 'scripts/*.mjs', 'scripts/*.cjs', 'eslint.config.js'] },
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/explicit-function-return-type': ['error', { allowExpressions: true }],
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true },
      ],
      '@typescript-eslint/no-unnecessary-condition': ['error', { allowConstantLoopConditions: true }],
      '@typescript-eslint/no-confusing-void-expression': 'off',
    },
  },
  ...modules.flatMap((module) => [
    {
      files: [`src/${module}/*.ts`],
      ignores: ['src/**/*.test.ts'],
      rules: { 'no-restricted-imports': ['error', { patterns: boundaryPatterns(module, 1) }] },
    },
    {
      files: [`src/${module}/*/*.ts`],
      ignores: ['src/**/*.test.ts'],
      rules: { 'no-restricted-imports': ['error', { patterns: boundaryPatterns(module, 2) }] },
    },
  ]),
  {
    // Benchmarks and the chaos harness use the product's public faces, and never the tests' helpers.
    files: ['scripts/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['**/test/**'], message: 'Scripts may not import from test/.' },
            {
              group: ['**/src/*/**', '!**/src/*/index.ts', '!**/src/shared/**'],
              message: 'Scripts import src modules only through their index.ts.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['test/**/*.ts', 'src/**/*.test.ts'],
    rules: { '@typescript-eslint/no-non-null-assertion': 'off' },
  },
);
