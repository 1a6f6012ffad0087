// Copies the production dependencies of a checkout into a package's staging tree:
//
//   node packaging/deb/prod-modules.mjs REPO DEST LICENSES
//
// The set is package-lock.json's: every installed package not marked "dev" (npm marks a
// package dev only when nothing outside devDependencies needs it, so this is what
// `npm prune --omit=dev` keeps). Reading the lock instead of pruning a full copy copies
// only what ships, a third of node_modules. Left out on the way, as nothing reads them at
// run time: type declarations (@types/*, *.d.ts), source maps, the modules' own tooling
// dotfiles (.eslintrc, .npmignore, .github/), and raw-socket's build/ (its addon is built
// per architecture by scripts/package). Writes LICENSES: one " name version license" line
// per module, sorted, for the package's copyright file.
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

const [repo, dest, licensesOut] = process.argv.slice(2);
if (!licensesOut) {
  console.error('usage: prod-modules.mjs REPO DEST LICENSES');
  process.exit(2);
}

const lock = JSON.parse(readFileSync(join(repo, 'package-lock.json'), 'utf8'));
if (!lock.packages) throw new Error('package-lock.json has no "packages" (lockfileVersion >= 2 needed)');

const dropFile = /\.(d\.[cm]?ts|map)$/;
const licenses = new Set();
for (const [path, meta] of Object.entries(lock.packages)) {
  if (!path.startsWith('node_modules/') || meta.dev || meta.link) continue;
  const src = join(repo, path);
  if (!existsSync(join(src, 'package.json'))) {
    if (meta.optional) continue; // an optional dependency for another platform
    throw new Error(`${path} is in package-lock.json but not installed: run npm ci`);
  }
  const pkg = JSON.parse(readFileSync(join(src, 'package.json'), 'utf8'));
  if (pkg.name.startsWith('@types/')) continue;
  cpSync(src, join(dest, path), {
    recursive: true,
    filter: (file) => {
      if (file === src) return true;
      const name = basename(file);
      // Nested node_modules hold packages of their own, copied by their own lock entries.
      if (name === 'node_modules' && dirname(file) === src) return false;
      if (pkg.name === 'raw-socket' && name === 'build' && dirname(file) === src) return false;
      return !name.startsWith('.') && !dropFile.test(name);
    },
  });
  const license = typeof pkg.license === 'string' ? pkg.license : (pkg.license?.type ?? pkg.licenses?.map((l) => l.type).join(' OR '));
  licenses.add(` ${pkg.name} ${pkg.version} ${license || 'see the license file in its directory'}`);
}
writeFileSync(licensesOut, [...licenses].sort().join('\n') + '\n');
