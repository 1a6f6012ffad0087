// Renders the config reference (README "Configuration reference") from the schema,
// so the documentation cannot drift from what is validated. Run:
//   node dist/config/reference.js
import { buildSchema, leaves } from './schema.js';

export function configReferenceMarkdown(): string {
  const rows = leaves(buildSchema('<hostname>')).map(({ path, spec }) => {
    const def = String(spec.doc).includes('Required.') ? undefined : spec.default === null ? 'null' : Array.isArray(spec.default) ? '[]' : JSON.stringify(spec.default);
    return `| \`${path}\` | ${def === undefined ? '*required*' : `\`${def}\``} | \`${spec.env}\` | ${String(spec.doc).replace(/\|/g, '\\|')} |`;
  });
  return ['| key | default | environment | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) process.stdout.write(configReferenceMarkdown() + '\n');
