/**
 * The exec shim's entry point, kept apart from the CLI so a shim loads only what it needs. The exec driver
 * starts it as `node shim-main.ts LAUNCH_FILE` when shoal runs from its sources; in the single binary it is
 * a bundle of its own that `shoal __shim LAUNCH_FILE` runs (scripts/sea-main.cjs).
 */
import { runShim, shimArgument } from './shim.ts';

const args = process.argv.slice(2);
void runShim(args[0] === shimArgument ? args.slice(1) : args);
