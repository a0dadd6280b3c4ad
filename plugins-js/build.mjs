// Builds one JavaScript plugin into a component of the `sluice:plugin`
// world with componentize-js (no AOT):
//   node build.mjs PLUGIN.js WIT_DIR OUT.wasm
// Run from a directory whose node_modules has
// @bytecodealliance/componentize-js (test-plugins/build.rs makes one).
import { componentize } from '@bytecodealliance/componentize-js';
import { readFileSync, writeFileSync } from 'node:fs';
const [source, wit, out] = process.argv.slice(2);
const { component } = await componentize(readFileSync(source, 'utf8'), {
  witPath: wit,
  worldName: 'plugin',
  disableFeatures: ['http', 'fetch-event', 'random', 'clocks', 'stdio'],
});
writeFileSync(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
