// rargen classes [QUERY]: the ImageNet-1k class ids and names the released generators
// are conditioned on (or the demo model's, with --demo); QUERY filters by substring.
import { IMAGENET_CLASSES, searchClasses } from '../classes.js';
import { loadDemoInfo } from '../demo/index.js';
import { parseCommandArgs, helpShown } from './_shared.js';

export const summary = 'list or search the ImageNet class names usable with --classes';

const USAGE = `Usage: rargen classes [QUERY] [--demo] [--json]

Lists the 1000 ImageNet-1k classes (id and synonyms), or those whose names contain
QUERY (case-insensitive; a number matches that id). Any synonym works with
rargen generate --classes, e.g. --classes "golden retriever,tabby".

Options:
  --demo      the demo model's classes instead
  --json      print [{"id": 207, "names": ["golden retriever"]}, ...]
  -h, --help  show this help`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(argv, { demo: { type: 'boolean' }, json: { type: 'boolean' } });
  if (helpShown(values, USAGE)) return 0;
  const list = values.demo ? loadDemoInfo().classes : IMAGENET_CLASSES;
  const found = searchClasses(positionals.join(' '), list);
  if (values.json) process.stdout.write(JSON.stringify(found) + '\n');
  else for (const m of found) process.stdout.write(`${String(m.id).padStart(4)}  ${m.names.join(', ')}\n`);
  if (found.length === 0) {
    process.stderr.write(`rargen classes: no class name contains ${JSON.stringify(positionals.join(' '))}\n`);
    return 1;
  }
  return 0;
}
