/** The table of commands, in the order `shoal help` lists them. */
import type { Command } from '../command.ts';
import { caCommand, keyCommand, loginCommand } from './access.ts';
import { aclCommand } from './acl.ts';
import { agentCommand } from './agent.ts';
import { eventsCommand } from './events.ts';
import { frameworkCommand } from './framework.ts';
import { jobCommand } from './job.ts';
import { logsCommand } from './logs.ts';
import { namespaceCommand } from './namespace.ts';
import { drainCommand, leaveCommand, membersCommand } from './nodes.ts';
import { runCommand } from './run.ts';
import { deploymentCommand, servicesCommand } from './services.ts';
import { snapshotCommand } from './snapshot.ts';
import { statusCommand, versionCommand } from './status.ts';
import { inspectCommand, killCommand, psCommand } from './tasks.ts';

export const commands: readonly Command[] = [
  agentCommand,
  runCommand,
  jobCommand,
  deploymentCommand,
  servicesCommand,
  psCommand,
  inspectCommand,
  logsCommand,
  eventsCommand,
  killCommand,
  drainCommand,
  leaveCommand,
  membersCommand,
  namespaceCommand,
  frameworkCommand,
  statusCommand,
  aclCommand,
  snapshotCommand,
  loginCommand,
  caCommand,
  keyCommand,
  versionCommand,
];
