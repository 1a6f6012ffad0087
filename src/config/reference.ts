// Renders the config reference (README "Configuration reference") from the schema,
// so the documentation cannot drift from what is validated. Run:
//   node dist/config/reference.js
import { buildSchema, isRequired, leaves } from './schema.js';

export function configReferenceMarkdown(): string {
  const rows = leaves(buildSchema('<hostname>')).map(({ path, spec, env }) => {
    const def = isRequired(spec) ? '*required*' : `\`${spec.default === null ? 'null' : Array.isArray(spec.default) ? '[]' : JSON.stringify(spec.default)}\``;
    const notes = [spec.live ? 'reload: live' : '', spec.extension ? 'extension' : ''].filter(Boolean).join(', ');
    return `| \`${path}\` | ${def} | \`${env}\` | ${String(spec.doc).replace(/\|/g, '\\|')}${notes ? ` *(${notes})*` : ''} |`;
  });
  return ['| key | default | environment | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) process.stdout.write(configReferenceMarkdown() + '\n');
