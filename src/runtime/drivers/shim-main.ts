/**
 * The exec shim's entry point when shoal runs from its sources (`node src/cli/main.ts agent`): the exec driver
 * starts `node shim-main.ts LAUNCH_FILE`. The single binary runs the shim as `shoal __shim LAUNCH_FILE` instead.
 * Kept apart from the CLI so a shim loads only what it needs.
 */
import { runShim } from './shim.ts';

void runShim(process.argv.slice(2));
