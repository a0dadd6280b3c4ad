#!/usr/bin/env node
// sluice-plugin build [PLUGIN.js] [-o OUT.wasm]: the plugin module as a
// component of the sluice:plugin world, with componentize-js (no AOT) and
// the WIT inside this package. StarlingMonkey takes one ES module, so the
// kit's component half (shared.js, component.js) is inlined into it and the
// plugin's `import { ... } from 'sluice-plugin'` reads from that.
import { readFileSync, writeFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const kit = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The component's one module: the WIT imports, the kit, the plugin. */
export function bundle(source) {
  const strip = (text) => text.split('\n').filter((l) => !/^export \{.*\};\s*$/.test(l));
  const component = strip(readFileSync(join(kit, 'component.js'), 'utf8'));
  const imports = component.filter((l) => l.startsWith('import '));
  const body = component.filter((l) => !l.startsWith('import '));
  const shared = strip(readFileSync(join(kit, 'shared.js'), 'utf8'));
  const names = 'PluginError, Config, Outcome, contextForTest, log, secrets, process, artifacts, deadline, definePlugin';
  let sawImport = false;
  const plugin = source
    .replace(/import\s*\{([^}]*)\}\s*from\s*['"]sluice-plugin['"];?/g, (_, list) => {
      sawImport = true;
      return `const {${list.replace(/\s+as\s+/g, ': ')}} = __sluicePlugin;`;
    })
    .replace(/import\s*\*\s*as\s+(\w+)\s+from\s*['"]sluice-plugin['"];?/g, (_, name) => {
      sawImport = true;
      return `const ${name} = __sluicePlugin;`;
    });
  if (/from\s*['"]sluice-plugin/.test(plugin)) {
    throw new Error("import from 'sluice-plugin' as `import { a, b } from 'sluice-plugin'` or `import * as sp from 'sluice-plugin'`");
  }
  return [
    ...imports,
    'const __sluicePlugin = (() => {',
    ...shared,
    ...body,
    `  return { ${names} };`,
    '})();',
    sawImport ? '' : '// (the plugin does not use the kit)',
    plugin,
  ].join('\n');
}

async function build(source, out) {
  const { componentize } = await import('@bytecodealliance/componentize-js');
  const { component } = await componentize(bundle(readFileSync(source, 'utf8')), {
    witPath: join(kit, 'wit'),
    worldName: 'plugin',
    // What a plugin does not use: smaller, and no imports outside the world.
    disableFeatures: ['http', 'fetch-event', 'random', 'clocks', 'stdio'],
  });
  writeFileSync(out, component);
  console.log(`wrote ${out} (${statSync(out).size} bytes); next: sluice plugin check ${out}`);
}

const args = process.argv.slice(2);
const usage = 'usage: sluice-plugin build [PLUGIN.js] [-o OUT.wasm] | sluice-plugin wit';
if (args[0] === 'wit') {
  console.log(join(kit, 'wit'));
} else if (args[0] === 'build') {
  let source = 'plugin.js';
  let out = 'plugin.wasm';
  for (let i = 1; i < args.length; i++) {
    if (args[i] === '-o' || args[i] === '--out') out = args[++i];
    else source = args[i];
  }
  try {
    await build(source, out);
  } catch (e) {
    console.error(`sluice-plugin build: ${e.message || e}`);
    process.exit(1);
  }
} else {
  console.error(usage);
  process.exit(2);
}
