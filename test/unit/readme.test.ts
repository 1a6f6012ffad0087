// The configuration reference in the README and in docs/contract.md is generated from the
// schema; keep both in sync with it.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { configReferenceMarkdown } from '../../src/config/reference.js';

describe.each(['README.md', 'docs/contract.md'])('%s', (file) => {
  const text = readFileSync(path.join(import.meta.dirname, '..', '..', file), 'utf8');
  it('carries the current configuration reference', () => {
    for (const line of configReferenceMarkdown().split('\n')) expect(text).toContain(line);
  });
});
