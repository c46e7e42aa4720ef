import { describe, expect, it } from 'vitest';
import { isShoalError } from '../../shared/errors.ts';
import {
  defaultDeviceRules,
  deviceNumbers,
  deviceRules,
  isolatedCheckCommand,
  isolatedCommand,
  isolatedExit,
  parseUserSpec,
  readOnlyMountPoints,
  resolveUser,
  taskHostname,
  type IsolationPlan,
} from './isolation.ts';

const passwd = [
  'root:x:0:0:root:/root:/bin/bash',
  'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin',
  '# a comment',
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
  'app:x:1000:1001::/home/app:/bin/sh',
  '',
].join('\n');
const group = ['root:x:0:', 'nogroup:x:65534:', 'staff:x:50:app', ''].join('\n');

describe('users', () => {
  it('parses NAME, UID and the :GROUP part, and refuses the rest', () => {
    expect(parseUserSpec('nobody')).toEqual({ user: 'nobody', group: null });
    expect(parseUserSpec('1000:50')).toEqual({ user: '1000', group: '50' });
    for (const bad of ['', ':1', '1:', '1:2:3'])
      expect(() => parseUserSpec(bad)).toThrow(/is not NAME, UID or UID:GID/);
  });

  it('resolves names and ids against the node databases', () => {
    expect(resolveUser(parseUserSpec('nobody'), passwd, group)).toEqual({
      uid: 65534,
      gid: 65534,
      name: 'nobody',
      known: true,
    });
    // A known uid takes its name and primary group; a group by name or number overrides it.
    expect(resolveUser(parseUserSpec('1000'), passwd, group)).toMatchObject({
      uid: 1000,
      gid: 1001,
      name: 'app',
    });
    expect(resolveUser(parseUserSpec('app:staff'), passwd, group)).toMatchObject({ uid: 1000, gid: 50 });
    // An unknown uid runs as itself, its gid the same unless given (as Docker does).
    expect(resolveUser(parseUserSpec('4242'), passwd, group)).toEqual({
      uid: 4242,
      gid: 4242,
      name: '4242',
      known: false,
    });
    expect(resolveUser(parseUserSpec('root'), passwd, group)).toMatchObject({ uid: 0, gid: 0 });
  });

  it('refuses unknown names with what to do', () => {
    expect(() => resolveUser(parseUserSpec('ghost'), passwd, group)).toThrow(
      'no user ghost on this node: name one that exists here, or give a numeric UID[:GID]',
    );
    try {
      resolveUser(parseUserSpec('app:ghosts'), passwd, group);
      expect.unreachable();
    } catch (error) {
      expect(isShoalError(error, 'INVALID_ARGUMENT')).toBe(true);
      expect(String(error)).toMatch(/no group ghosts on this node/);
    }
  });
});

describe('read-only mounts', () => {
  const mountInfo = [
    '22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
    '23 22 0:5 / /proc rw - proc proc rw',
    '24 22 0:6 / /sys rw - sysfs sysfs rw',
    '25 22 253:1 / /home rw - xfs /dev/vdb rw',
    '26 22 0:20 / /dev/shm rw - tmpfs tmpfs rw',
    '27 22 253:2 / /var/lib/shoal rw - ext4 /dev/vdc rw',
    '28 27 253:2 /x /var/lib/shoal/tasks/a rw - ext4 /dev/vdc rw',
    '29 22 0:30 / /tmp rw - tmpfs tmpfs rw',
    '30 29 253:3 / /tmp/engine rw - ext4 /dev/vdd rw',
    '31 22 253:4 / /mnt/with\\040space rw - ext4 /dev/vde rw',
    '32 22 0:31 / /run rw - tmpfs tmpfs rw',
    '',
  ].join('\n');

  it('lists the mounts of filesystems with files, "/" first, less what the task view covers', () => {
    expect(readOnlyMountPoints(mountInfo, '/var/lib/shoal')).toEqual([
      '/',
      '/run',
      '/home',
      '/mnt/with space',
    ]);
  });
});

describe('the command line', () => {
  const plan: IsolationPlan = {
    uid: 65534,
    gid: 65534,
    userName: 'nobody',
    initGroups: true,
    capabilities: [],
    hiddenDir: '/var/lib/shoal',
    taskDir: '/var/lib/shoal/tasks/t1',
    readOnlyMounts: ['/', '/home'],
    network: 'none',
    hostname: 'web',
  };

  it('runs the task under unshare, the setup shell and setpriv, in that order', () => {
    const [program, args] = isolatedCommand(plan, 'sleep', ['10']);
    expect(program).toBe('unshare');
    expect(args.slice(0, 9)).toEqual([
      '--pid',
      '--fork',
      '--kill-child',
      '--mount',
      '--ipc',
      '--uts',
      '--net',
      '--mount-proc',
      '/bin/sh',
    ]);
    expect(args.slice(11, 17)).toEqual([
      'shoal-init',
      '/var/lib/shoal',
      '/var/lib/shoal/tasks/t1',
      'web',
      '/\n/home',
      '',
    ]);
    expect(args.slice(17)).toEqual([
      'env',
      '--default-signal',
      'setpriv',
      '--reuid=65534',
      '--regid=65534',
      '--init-groups',
      '--bounding-set=-all',
      '--inh-caps=-all',
      '--nnp',
      '--',
      'sleep',
      '10',
    ]);
  });

  it("enters an image's root with unshare, which drops to the user; setpriv keeps it only what that takes", () => {
    const [, args] = isolatedCommand(
      {
        ...plan,
        image: { digest: 'sha256:ab', lowerDir: '/var/lib/shoal/images/rootfs/ab', workingDir: '/work' },
      },
      'hello',
      ['world'],
    );
    expect(args[16]).toBe('/var/lib/shoal/images/rootfs/ab');
    expect(args.slice(17)).toEqual([
      'env',
      '--default-signal',
      'setpriv',
      '--bounding-set=-all,+sys_chroot,+setuid,+setgid',
      '--inh-caps=-all',
      '--nnp',
      '--',
      'unshare',
      '--root=/rootfs',
      '--wd=/work',
      '--setgid=65534',
      '--setuid=65534',
      '--',
      'hello',
      'world',
    ]);
  });

  it('keeps root as root with only the capabilities given', () => {
    const [, args] = isolatedCommand({ ...plan, uid: 0, gid: 0, capabilities: ['chown', 'kill'] }, 'id', []);
    expect(args.slice(args.indexOf('setpriv'))).toEqual([
      'setpriv',
      '--bounding-set=-all,+chown,+kill',
      '--inh-caps=-all',
      '--nnp',
      '--',
      'id',
    ]);
  });
});

describe('checks', () => {
  it('enter the namespaces of the task, in its directory, as its user', () => {
    const plan: IsolationPlan = {
      uid: 1000,
      gid: 1000,
      userName: 'app',
      initGroups: false,
      capabilities: [],
      hiddenDir: '/d',
      taskDir: '/d/tasks/t',
      readOnlyMounts: ['/'],
      network: 'host',
      hostname: 't',
    };
    expect(isolatedCheckCommand(plan, 4242, 'cat', ['/tmp/ready'])).toEqual([
      'nsenter',
      [
        '--target=4242',
        '--mount',
        '--pid',
        '--ipc',
        '--uts',
        '--wd=/d/tasks/t',
        '--',
        'env',
        '--default-signal',
        'setpriv',
        '--reuid=1000',
        '--regid=1000',
        '--clear-groups',
        '--bounding-set=-all',
        '--inh-caps=-all',
        '--nnp',
        '--',
        'cat',
        '/tmp/ready',
      ],
    ]);
  });
});

describe('checks in an image', () => {
  it("enter the image's root at its working directory after the namespaces, as the task does", () => {
    const plan: IsolationPlan = {
      uid: 1000,
      gid: 1001,
      userName: 'app',
      initGroups: false,
      capabilities: [],
      hiddenDir: '/d',
      taskDir: '/d/tasks/t',
      readOnlyMounts: ['/'],
      network: 'host',
      hostname: 't',
      image: { digest: 'sha256:ab', lowerDir: '/d/images/rootfs/ab', workingDir: '/work' },
    };
    const [, args] = isolatedCheckCommand(plan, 4242, 'cat', ['/tmp/ready']);
    expect(args.slice(args.indexOf('--bounding-set=-all,+sys_chroot,+setuid,+setgid'))).toEqual([
      '--bounding-set=-all,+sys_chroot,+setuid,+setgid',
      '--inh-caps=-all',
      '--nnp',
      '--',
      'unshare',
      '--root=/rootfs',
      '--wd=/work',
      '--setgid=1001',
      '--setuid=1000',
      '--',
      'cat',
      '/tmp/ready',
    ]);
  });
});

describe('exits and names', () => {
  it("reads a shell's 128+N as signal N, and leaves other statuses alone", () => {
    expect(isolatedExit(143, null)).toEqual({ code: null, signal: 'SIGTERM' });
    expect(isolatedExit(137, null)).toEqual({ code: null, signal: 'SIGKILL' });
    expect(isolatedExit(3, null)).toEqual({ code: 3, signal: null });
    expect(isolatedExit(128, null)).toEqual({ code: 128, signal: null });
    expect(isolatedExit(255, null)).toEqual({ code: 255, signal: null });
    expect(isolatedExit(null, 'SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('makes a hostname of a task name', () => {
    expect(taskHostname('web.api.server.3')).toBe('web.api.server.3');
    expect(taskHostname('a_b')).toBe('a-b');
    expect(taskHostname('x'.repeat(100))).toHaveLength(63);
  });
});

describe('devices', () => {
  it('splits a dev_t as glibc does, small and large numbers alike', () => {
    expect(deviceNumbers(10 * 256 + 200)).toEqual({ major: 10, minor: 200 });
    expect(deviceNumbers(0x103)).toEqual({ major: 1, minor: 3 });
    // makedev(259, 65536): major above 255 and minor above 255 take the high bits.
    const rdev =
      ((259 & 0xfff) << 8) + (65536 & 0xff) + (65536 & 0xffffff00) * 2 ** 12 + (259 & 0xfffff000) * 2 ** 32;
    expect(deviceNumbers(rdev)).toEqual({ major: 259, minor: 65536 });
  });

  it('allows the usual devices and those held', () => {
    expect(deviceRules([{ type: 'c', major: 195, minor: 0 }])).toEqual([
      ...defaultDeviceRules,
      'c 195:0 rwm',
    ]);
    expect(defaultDeviceRules).not.toContain('c 10:200 rwm');
  });
});
