// The README's configuration reference is generated from the schema; keep them in sync.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { configReferenceMarkdown } from '../../src/config/reference.js';

describe('README', () => {
  const readme = readFileSync(path.join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
  it('carries the current configuration reference', () => {
    for (const line of configReferenceMarkdown().split('\n')) expect(readme).toContain(line);
  });
});
