/** The `shoal` binary's entry point. No top-level await: the single binary is a CommonJS bundle. */
// The shim's own file, not runtime/index.ts: a shim starts once per task and must not load the drivers.
// eslint-disable-next-line no-restricted-imports -- the one import that may bypass the module's index
import { runShim, shimArgument } from '../runtime/drivers/shim.ts';

// The exec driver starts one shim per task as `shoal __shim LAUNCH_FILE`. The single binary runs the shim's own
// bundle for that (scripts/sea-main.cjs); this branch serves the bundle run by node (`node dist/shoal.cjs`),
// where the CLI (libp2p, dockerode…) is imported lazily, so a shim does not run its modules.
if (process.argv[2] === shimArgument) {
  void runShim(process.argv.slice(3));
} else {
  void import('./cli.ts').then(async ({ main, commandOf }) => {
    const argv = process.argv.slice(2);
    const exitCode = await main(argv);
    // The agent keeps running on its own handles; every other command exits with its code.
    if (commandOf(argv) !== 'agent' || exitCode !== 0) process.exit(exitCode);
  });
}
