// ESLint (flat config) for the extension's TypeScript and the kernel-served widget JS in llm_magics/views.
// Run from the repository root (`npm run lint` does: with --config, paths are relative to the cwd), so that
// one config, whose plugins live in labextension/node_modules, covers both folders.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['labextension/lib/**', 'labextension/node_modules/**', 'llm_magics/labextension/**'] },
  {
    files: ['labextension/src/**/*.ts', 'labextension/test/**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommended],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }]
    }
  },
  {
    files: ['llm_magics/views/**/*.js'],
    extends: [js.configs.recommended],
    languageOptions: { sourceType: 'module', globals: { ...globals.browser } }
  },
  prettier
);
