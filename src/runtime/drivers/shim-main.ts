/**
 * The entry point of shoal's small helper processes, kept apart from the CLI so they load only what they need:
 * an exec task's shim (`shim-main.ts LAUNCH_FILE`, or `shim-main.ts __shim LAUNCH_FILE`) and the docker
 * driver's lease keeper (`shim-main.ts __lease-keeper DIR`). The drivers start it with node when shoal runs
 * from its sources; in the single binary it is a bundle of its own that `shoal __shim …` and
 * `shoal __lease-keeper …` run (scripts/sea-main.cjs).
 */
import { leaseKeeperArgument, runLeaseKeeper } from './lease-keeper.ts';
import { runShim, shimArgument } from './shim.ts';

const args = process.argv.slice(2);
if (args[0] === leaseKeeperArgument) void runLeaseKeeper(args.slice(1));
else void runShim(args[0] === shimArgument ? args.slice(1) : args);
