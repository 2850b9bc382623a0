// The rargen CLI from the TypeScript sources, for tests that spawn it (run with vite-node).
import { main } from '../../lib/cli.js';

process.exitCode = await main(process.argv.slice(2));
