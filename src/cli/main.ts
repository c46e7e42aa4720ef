/** The `shoal` binary's entry point. No top-level await: the single binary is a CommonJS bundle. */
import { main } from './commands.ts';

void main(process.argv.slice(2)).then((exitCode) => {
  // The agent keeps running on its own handles; every other command exits with its code.
  if (process.argv[2] !== 'agent' || exitCode !== 0) process.exit(exitCode);
});
