/**
 * Isolation of exec tasks: who the task runs as and what it can see. The exec shim starts an isolated task as
 *
 *   unshare --pid --fork --kill-child --mount --ipc --uts [--net] --mount-proc  (util-linux)
 *     /bin/sh -c SETUP  (process 1 of the task's pid namespace)
 *       env --default-signal setpriv --reuid … --nnp --bounding-set … -- COMMAND ARGS…
 *
 * SETUP, in the task's own mount namespace, remounts the host's filesystems read-only, hides the agent's data
 * directory (its keys, every other task's sandbox) under an empty tmpfs and binds the task's own directory
 * back in place, binds the task's tmp/ over /tmp and a fresh tmpfs over /dev/shm, sets the hostname to the
 * task's name, then runs the task and waits for it. A task in an image instead gets a root of its own:
 * SETUP mounts the image (an overlay), pivots the namespace's root to a tmpfs that holds it and the host's
 * programs, lets go of the host's root, and the task's start chroots into the image (`unshare --root`). The shell stays as process 1 because the kernel does
 * not deliver a signal to a namespace's process 1 unless it handles it: a task run there directly would
 * never see the SIGTERM of a graceful stop. The shell handles the usual stop signals with a no-op (the
 * shim's signal reaches the task itself, which shares the shell's process group) and exits with the task's
 * status; when it exits, the kernel kills whatever else is left in the namespace. `env --default-signal`
 * (coreutils ≥ 8.31) undoes the SIGINT and SIGQUIT a shell ignores for a background command.
 *
 * Everything here is pure: the plan is made from the spec and what the node has, the argv from the plan.
 */
import { constants as osConstants } from 'node:os';
import { isAbsolute } from 'node:path';
import { ShoalError } from '../../shared/errors.ts';

/** What an isolated exec task gets. JSON-serialisable: it travels in the shim's launch file. */
export interface IsolationPlan {
  uid: number;
  gid: number;
  /** As resolved, for messages: "nobody (uid 65534)". */
  userName: string;
  /** Supplementary groups from the user database (setpriv --init-groups); else none. */
  initGroups: boolean;
  /** Capabilities kept (setpriv names, lower-case, no cap_ prefix); [] for none. */
  capabilities: string[];
  /** Hidden under an empty tmpfs: the agent's data directory. */
  hiddenDir: string;
  /** The task's directory: bound back in place, its working directory. */
  taskDir: string;
  /** Mount points of real filesystems, remounted read-only in the task's view ("/" first). */
  readOnlyMounts: string[];
  /** `none`: a network namespace of its own with only loopback. */
  network: 'host' | 'none';
  hostname: string;
  /**
   * Where this node's unshare, setpriv, env and nsenter are: run by absolute path, as the task's own PATH
   * (its spec may set one) is not the host's. Absent in plans from before it existed: looked up by name.
   */
  programs?: Readonly<Record<IsolationProgram, string>>;
  /**
   * Run in an image's root instead of the host's: `lowerDir` (the image store's unpacked root, shared
   * and never written) under an overlay whose writable layer is in the task directory, entered with
   * chroot at `workingDir`. Absent: the host's root, read-only.
   */
  image?: { readonly digest: string; readonly lowerDir: string; readonly workingDir: string };
}

/** The programs isolation runs (util-linux and coreutils); the driver checks they exist. */
export const isolationPrograms = ['unshare', 'setpriv', 'env', 'mount', 'nsenter'] as const;
export type IsolationProgram = (typeof isolationPrograms)[number];

function program(plan: IsolationPlan, name: IsolationProgram): string {
  return plan.programs?.[name] ?? name;
}

/**
 * Docker's default capability set, less NET_RAW (raw sockets let a task forge packets on the host's
 * network, which root tasks here share): what a root task keeps.
 */
export const rootTaskCapabilities: readonly string[] = [
  'chown',
  'dac_override',
  'fsetid',
  'fowner',
  'mknod',
  'setgid',
  'setuid',
  'setfcap',
  'setpcap',
  'net_bind_service',
  'sys_chroot',
  'kill',
  'audit_write',
];

/** Exit status of the setup script when the task cannot be isolated (as the cgroup join's). */
export const isolationFailedExitCode = 125;
/** The prefix of the setup script's error line on the task's stderr. */
export const isolationFailurePrefix = 'shoal: cannot isolate the task:';

/** A user as a task names it: NAME, UID, NAME:GROUP or UID:GID. */
export interface UserSpec {
  user: string;
  group: string | null;
}

export function parseUserSpec(text: string): UserSpec {
  const [user = '', group, ...rest] = text.split(':');
  if (user === '' || group === '' || rest.length > 0) {
    throw new ShoalError('INVALID_ARGUMENT', `user ${JSON.stringify(text)} is not NAME, UID or UID:GID`);
  }
  return { user, group: group ?? null };
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  name: string;
  /** Named in the user database: its supplementary groups apply. */
  known: boolean;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

/** The entries of an /etc/passwd or /etc/group text: name, id, primary group (passwd only). */
export function parseIdDatabase(text: string): PasswdEntry[] {
  const entries: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const fields = line.split(':');
    const id = Number(fields[2]);
    const gid = Number(fields[3]);
    if (fields[0] === undefined || fields[0] === '' || !Number.isInteger(id)) continue;
    entries.push({ name: fields[0], uid: id, gid: Number.isInteger(gid) ? gid : id });
  }
  return entries;
}

/**
 * Resolves a task's user against the node's user and group databases. A UID not in the database runs with
 * that uid and, unless given, the same gid (as Docker does); a NAME must exist.
 */
export function resolveUser(spec: UserSpec, passwdText: string, groupText: string): ResolvedUser {
  const users = parseIdDatabase(passwdText);
  const numeric = /^\d+$/.test(spec.user);
  const entry = numeric
    ? users.find((candidate) => candidate.uid === Number(spec.user))
    : users.find((candidate) => candidate.name === spec.user);
  if (entry === undefined && !numeric) {
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `no user ${spec.user} on this node: name one that exists here, or give a numeric UID[:GID]`,
    );
  }
  const uid = entry?.uid ?? Number(spec.user);
  let gid = entry?.gid ?? uid;
  if (spec.group !== null) {
    if (/^\d+$/.test(spec.group)) gid = Number(spec.group);
    else {
      const group = parseIdDatabase(groupText).find((candidate) => candidate.name === spec.group);
      if (group === undefined) {
        throw new ShoalError('INVALID_ARGUMENT', `no group ${spec.group} on this node`);
      }
      gid = group.uid;
    }
  }
  if (uid > 0xfffffffe || gid > 0xfffffffe) {
    throw new ShoalError('INVALID_ARGUMENT', `user ${spec.user}: ids go up to 4294967294`);
  }
  return { uid, gid, name: entry?.name ?? String(uid), known: entry !== undefined };
}

/** Filesystems that hold files (as opposed to proc, sysfs, cgroup…): the ones made read-only for a task. */
const virtualFilesystems = new Set([
  'proc',
  'sysfs',
  'cgroup',
  'cgroup2',
  'devtmpfs',
  'devpts',
  'mqueue',
  'securityfs',
  'debugfs',
  'tracefs',
  'pstore',
  'bpf',
  'configfs',
  'fusectl',
  'hugetlbfs',
  'autofs',
  'binfmt_misc',
  'efivarfs',
  'nsfs',
  'rpc_pipefs',
]);

/**
 * The mount points a task's view makes read-only, from /proc/self/mountinfo: every mount of a filesystem
 * that holds files, "/" first, except those the task's view covers: /tmp, /dev/shm and `hiddenDir`.
 */
export function readOnlyMountPoints(mountInfo: string, hiddenDir: string): string[] {
  const points = new Set<string>();
  for (const line of mountInfo.split('\n')) {
    const separator = line.indexOf(' - ');
    if (separator < 0) continue;
    const mountPoint = unescapeMountPath(line.slice(0, separator).split(' ')[4] ?? '');
    const fsType = line.slice(separator + 3).split(' ')[0] ?? '';
    if (!isAbsolute(mountPoint) || mountPoint.includes('\n') || virtualFilesystems.has(fsType)) continue;
    // Covered in the task's view (by its tmp/, a fresh /dev/shm, the tmpfs that hides the data directory).
    if (['/tmp', '/dev/shm', hiddenDir].some((covered) => isWithin(mountPoint, covered))) continue;
    points.add(mountPoint);
  }
  return [...points].sort((a, b) => (a === '/' ? -1 : b === '/' ? 1 : a.length - b.length));
}

function isWithin(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/** mountinfo writes space, tab, newline and backslash in paths as \040, \011, \012 and \134. */
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/**
 * The setup script, run by /bin/sh as process 1 of the task's namespaces. Arguments: HIDDEN TASK_DIR
 * HOSTNAME READ_ONLY_MOUNTS (one per line) IMAGE_LOWER_DIR (empty: none), then the command that runs the task.
 */
export const isolationSetupScript = [
  'hidden=$1 task=$2 name=$3 readonly=$4 lower=$5',
  'shift 5',
  // The host's tools for the setup; the task gets its own PATH back.
  'taskpath=$PATH',
  'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  // A stop that arrives during setup kills the mount or mkdir at hand (they share the task's process
  // group): the task then ends as killed by that signal, not as a setup failure, and is never started.
  'stopped=0',
  "trap 'stopped=129' HUP; trap 'stopped=130' INT; trap 'stopped=131' QUIT",
  "trap 'stopped=138' USR1; trap 'stopped=140' USR2; trap 'stopped=143' TERM",
  `fail() { [ "$stopped" = 0 ] || exit "$stopped"; echo "${isolationFailurePrefix} $*" >&2; exit ${isolationFailedExitCode}; }`,
  'cd "$task" || fail "no task directory $task"',
  'mount -t tmpfs -o mode=1777,size=64m,nosuid,nodev shoal-shm /dev/shm || fail "cannot give it a private /dev/shm"',
  'command -v hostname >/dev/null && hostname "$name"',
  // An image's root: an overlay on the store's copy, with the task's own /proc, /dev, /tmp and directory.
  'if [ -n "$lower" ]; then',
  '  mkdir -p .image/upper .image/work rootfs || fail "cannot make the image root in $task"',
  '  mount -t overlay shoal-image -o "lowerdir=$lower,upperdir=$task/.image/upper,workdir=$task/.image/work" rootfs || fail "cannot mount the image root (overlayfs)"',
  '  mkdir -p rootfs/proc rootfs/dev rootfs/tmp rootfs/shoal/task rootfs/etc || fail "cannot make mount points in the image root"',
  '  mount -t proc proc rootfs/proc || fail "cannot mount /proc in the image root"',
  '  mount --rbind /dev rootfs/dev || fail "cannot bind /dev in the image root"',
  '  mount --no-canonicalize --bind tmp rootfs/tmp || fail "cannot bind its tmp/ in the image root"',
  '  mount --no-canonicalize --bind . rootfs/shoal/task || fail "cannot bind its directory in the image root"',
  '  for file in /etc/resolv.conf /etc/hosts; do',
  '    [ -f "$file" ] || continue',
  '    [ -e "rootfs$file" ] || : > "rootfs$file"',
  '    mount --bind "$file" "rootfs$file" || fail "cannot bind $file in the image root"',
  '  done',
  // Its own root, with pivot_root: a tmpfs that holds the image's root (at /rootfs) and, read-only, only
  // the host's programs and libraries the rest of the setup and the task's start run (util-linux and
  // coreutils). The host's root is then let go of: a root task that breaks out of its chroot (it keeps
  // CAP_SYS_CHROOT, as in Docker) finds those programs and nothing else — no /etc, no data, no other task.
  '  mkdir -p .image/root || fail "cannot make the task\'s root in $task"',
  '  mount -t tmpfs -o mode=0755,size=64k,nosuid,nodev shoal-root .image/root || fail "cannot make the task\'s root"',
  '  for dir in /usr /bin /sbin /lib /lib32 /lib64 /libx32; do',
  '    if [ -L "$dir" ]; then ln -s "$(readlink "$dir")" ".image/root$dir" || fail "cannot link $dir in the task\'s root"',
  '    elif [ -d "$dir" ]; then mkdir ".image/root$dir" && mount --bind -o ro "$dir" ".image/root$dir" || fail "cannot bind $dir in the task\'s root"',
  '    fi',
  '  done',
  '  mkdir .image/root/etc .image/root/dev .image/root/rootfs .image/root/proc .image/root/.host || fail "cannot make mount points in the task\'s root"',
  // The shell starts the task with its stdin from /dev/null (as for any background command).
  '  : > .image/root/dev/null && mount --bind /dev/null .image/root/dev/null || fail "cannot bind /dev/null in the task\'s root"',
  // The loader's cache: where a distribution's libraries are when its built-in paths do not say.
  '  if [ -f /etc/ld.so.cache ]; then : > .image/root/etc/ld.so.cache && mount --bind -o ro /etc/ld.so.cache .image/root/etc/ld.so.cache || fail "cannot bind /etc/ld.so.cache in the task\'s root"; fi',
  '  mount --rbind rootfs .image/root/rootfs || fail "cannot bind the image\'s root in the task\'s root"',
  // umount reads /proc/self/mountinfo: a /proc until the host's root is gone.
  '  mount -t proc proc .image/root/proc || fail "cannot mount /proc in the task\'s root"',
  '  cd .image/root && pivot_root . .host || fail "cannot pivot to the task\'s root"',
  '  umount -l /.host || fail "cannot let go of the host\'s root"',
  '  umount /proc && rmdir /proc /.host && mount -o remount,bind,ro / || fail "cannot make the task\'s root read-only"',
  'else',
  '  mount -t tmpfs -o mode=0755,size=64k,nosuid,nodev shoal-hidden "$hidden" || fail "cannot hide $hidden"',
  // Relative sources, not canonicalized: the working directory is the task directory the tmpfs now hides.
  '  mount --no-canonicalize --bind tmp /tmp || fail "cannot bind its tmp/ over /tmp"',
  '  mkdir -p "$task" && mount --no-canonicalize --rbind . "$task" || fail "cannot bind $task back"',
  '  cd "$task" || fail "cannot enter $task"',
  // Read-only last: a bind made from a read-only mount would be read-only too. Mounts made above are
  // mounts of their own, so they stay writable.
  '  set -f',
  "IFS='",
  "'",
  // A mount that went away since the plan was made is skipped; "/" must become read-only.
  '  for point in $readonly; do',
  '    mount -o remount,bind,ro "$point" 2>/dev/null && continue',
  '    [ "$point" = / ] && fail "cannot make / read-only"',
  '    [ -e "$point" ] && echo "shoal: note: $point stays writable: it could not be remounted read-only" >&2',
  '  done',
  '  unset IFS',
  '  set +f',
  'fi',
  '[ "$stopped" = 0 ] || exit "$stopped"',
  'trap : TERM INT HUP QUIT USR1 USR2',
  'PATH=$taskpath "$@" &',
  'child=$!',
  // wait returns early when a trapped signal arrives; the task has it too and goes on or ends.
  'while :; do wait "$child"; status=$?; kill -0 "$child" 2>/dev/null || exit "$status"; done',
].join('\n');

/** The command line that runs `command args` isolated by `plan`. */
export function isolatedCommand(
  plan: IsolationPlan,
  command: string,
  args: readonly string[],
): [string, string[]] {
  const unshareArgs = [
    '--pid',
    '--fork',
    '--kill-child',
    '--mount',
    '--ipc',
    '--uts',
    ...(plan.network === 'none' ? ['--net'] : []),
    '--mount-proc',
  ];
  return [
    program(plan, 'unshare'),
    [
      ...unshareArgs,
      '/bin/sh',
      '-c',
      isolationSetupScript,
      'shoal-init',
      plan.hiddenDir,
      plan.taskDir,
      plan.hostname,
      plan.readOnlyMounts.join('\n'),
      plan.image?.lowerDir ?? '',
      program(plan, 'env'),
      '--default-signal',
      program(plan, 'setpriv'),
      ...privilegeAndRootArgs(plan),
      command,
      ...args,
    ],
  ];
}

/**
 * setpriv's arguments and, for a task in an image, the unshare that enters the image's root: what follows
 * `setpriv` on the command line up to the task's own command.
 */
function privilegeAndRootArgs(plan: IsolationPlan): string[] {
  if (plan.image === undefined) return [...privilegeArgs(plan), '--'];
  return [
    ...imagePrivilegeArgs(plan),
    '--',
    program(plan, 'unshare'),
    '--root=/rootfs',
    `--wd=${plan.image.workingDir}`,
    ...(plan.uid === 0 ? [] : [`--setgid=${plan.gid}`, `--setuid=${plan.uid}`]),
    '--',
  ];
}

/** setpriv's arguments: the task's user, groups and capabilities, and no_new_privs. */
function privilegeArgs(plan: IsolationPlan): string[] {
  const capabilities =
    plan.capabilities.length === 0 ? '-all' : `-all,${plan.capabilities.map((c) => `+${c}`).join(',')}`;
  return plan.uid === 0
    ? [`--bounding-set=${capabilities}`, '--inh-caps=-all', '--nnp']
    : [
        `--reuid=${plan.uid}`,
        `--regid=${plan.gid}`,
        plan.initGroups ? '--init-groups' : '--clear-groups',
        `--bounding-set=${capabilities}`,
        '--inh-caps=-all',
        '--nnp',
      ];
}

/**
 * setpriv's arguments for a task in an image's root: unshare then chroots and drops to the task's user
 * itself (setpriv could not: the host's setpriv is not in the image), so the bounding set keeps chroot,
 * setuid and setgid for it — and a non-root user loses them all with its setuid, as no_new_privs keeps
 * them from coming back.
 */
function imagePrivilegeArgs(plan: IsolationPlan): string[] {
  const kept = plan.uid === 0 ? plan.capabilities : ['sys_chroot', 'setuid', 'setgid'];
  return [`--bounding-set=-all${kept.map((c) => `,+${c}`).join('')}`, '--inh-caps=-all', '--nnp'];
}

/**
 * The command line that runs a health check's command where the task runs: in the namespaces of its
 * process 1 (host pid `initPid`), in its directory (or, for a task in an image, in the image's root at its
 * working directory), as its user with its capabilities — so `cat /tmp/ready` reads the task's /tmp, and a
 * check can do no more than the task could.
 */
export function isolatedCheckCommand(
  plan: IsolationPlan,
  initPid: number,
  command: string,
  args: readonly string[],
): [string, string[]] {
  return [
    program(plan, 'nsenter'),
    [
      `--target=${initPid}`,
      '--mount',
      '--pid',
      '--ipc',
      '--uts',
      ...(plan.network === 'none' ? ['--net'] : []),
      // In an image, entering the mount namespace puts it at the task's root; unshare goes on from there.
      ...(plan.image === undefined ? [`--wd=${plan.taskDir}`] : []),
      '--',
      program(plan, 'env'),
      '--default-signal',
      program(plan, 'setpriv'),
      ...privilegeAndRootArgs(plan),
      command,
      ...args,
    ],
  ];
}

/**
 * How an isolated task ended, from the status its process 1 (the shell) exited with: a shell reports a
 * child killed by signal N as 128 + N. Like Docker's 137 and 143, so an isolated task's exit code above 128
 * is read as that signal.
 */
export function isolatedExit(
  code: number | null,
  signal: NodeJS.Signals | null,
): {
  code: number | null;
  signal: string | null;
} {
  if (code === null || code <= 128 || code > 128 + 64) return { code, signal };
  const name = signalNames.get(code - 128);
  return name === undefined ? { code, signal } : { code: null, signal: name };
}

const signalNames = new Map<number, string>(
  Object.entries(osConstants.signals).map(([name, number]) => [number, name]),
);

/**
 * The devices every isolated task may use (Docker's default list less tun): null, zero, full, random,
 * urandom, tty, console, ptmx and the pseudo-terminals, and mknod of any (opening one needs a rule).
 */
export const defaultDeviceRules: readonly string[] = [
  'c *:* m',
  'b *:* m',
  'c 1:3 rwm',
  'c 1:5 rwm',
  'c 1:7 rwm',
  'c 1:8 rwm',
  'c 1:9 rwm',
  'c 5:0 rwm',
  'c 5:1 rwm',
  'c 5:2 rwm',
  'c 136:* rwm',
];

/** Linux's dev_t split into major and minor (glibc's gnu_dev_major and gnu_dev_minor). */
export function deviceNumbers(rdev: number): { major: number; minor: number } {
  const high = Math.floor(rdev / 2 ** 32);
  const low = rdev % 2 ** 32;
  const major = ((low >>> 8) & 0xfff) | ((high & 0xfffff000) >>> 0);
  const minor = (low & 0xff) | ((low >>> 12) & 0xffffff00);
  return { major: major >>> 0, minor: minor >>> 0 };
}

/** The devices cgroup rules of a task that holds `devices` (character or block, by number). */
export function deviceRules(devices: readonly { type: 'c' | 'b'; major: number; minor: number }[]): string[] {
  return [
    ...defaultDeviceRules,
    ...devices.map((device) => `${device.type} ${device.major}:${device.minor} rwm`),
  ];
}

/** The hostname a task's UTS namespace gets: its name, cut to what the kernel takes (64 bytes). */
export function taskHostname(name: string): string {
  const cleaned = name.replace(/[^A-Za-z0-9.-]/g, '-').slice(0, 63);
  return cleaned === '' ? 'task' : cleaned;
}
