/**
 * The dashboard (/ui) in a real browser (Debian's chromium, through puppeteer-core) against three real
 * agents: log in with the management token; see the members and the leader; watch a task appear and
 * finish and read its output, all without a reload; see why a task that cannot be placed waits; drain a
 * node with its button; SIGKILL the leader and see the new one on the Overview, again without a reload.
 * Screenshots of every page go to SHOAL_SCREENSHOT_DIR (default .tmp/screenshots). Skipped when
 * /usr/bin/chromium is missing.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, describe, expect, it } from 'vitest';
import type { MemberView, StatusView } from '../../src/api/index.ts';
import { TestCluster, buildBinary, repoRoot, waitFor, type TestAgent } from '../helpers/cluster.ts';

const chromium = '/usr/bin/chromium';
const haveChromium = existsSync(chromium);
if (!haveChromium) console.log(`dashboard e2e skipped: ${chromium} is missing (apt-get install chromium)`);

const screenshotDir = resolve(repoRoot, process.env['SHOAL_SCREENSHOT_DIR'] ?? join('.tmp', 'screenshots'));
/** Waits in the browser: generous, for a loaded 2-core CI machine. */
const uiTimeoutMs = 60_000;

const byTestId = (id: string, extra = ''): string => `[data-testid="${id}"]${extra}`;

describe.skipIf(!haveChromium)('the dashboard in a browser', { timeout: 300_000 }, () => {
  const cluster = new TestCluster();
  const agents: TestAgent[] = [];
  let browser: Browser | null = null;
  let page: Page;
  let token = '';
  let readToken = '';
  /** The agent whose API serves the browser: not the leader, so it survives the failover step. */
  let ui: TestAgent;
  let taskId = '';
  const pageErrors: string[] = [];
  const cspViolations: string[] = [];

  afterAll(async () => {
    await browser?.close();
    await cluster.stop();
  }, 120_000);

  const agentNamed = (name: string | undefined): TestAgent => {
    const agent = agents.find((a) => a.name === name);
    if (!agent) throw new Error(`no agent named ${name}`);
    return agent;
  };

  async function screenshot(name: string): Promise<void> {
    await page.screenshot({ path: join(screenshotDir, `${name}.png`), fullPage: true });
  }

  async function nav(id: string): Promise<void> {
    await page.click(byTestId(`nav-${id}`));
  }

  /** The text of the first element matching `selector`, once `accept` takes it. */
  async function waitForText(
    selector: string,
    accept: (text: string) => boolean,
    timeout = uiTimeoutMs,
  ): Promise<string> {
    let last = '';
    try {
      await waitFor(
        `${selector} to read as expected`,
        async () => {
          last = await page.$eval(selector, (el) => el.textContent);
          return accept(last);
        },
        timeout,
      );
    } catch (error) {
      throw new Error(
        `${error instanceof Error ? error.message : String(error)} (last text: ${JSON.stringify(last)})`,
      );
    }
    return last;
  }

  async function login(agent: TestAgent, secret = token): Promise<void> {
    await page.goto(`http://${agent.api}/ui`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector(byTestId('login-token'), { timeout: uiTimeoutMs });
    await page.type(byTestId('login-token'), secret);
    await page.click(byTestId('login-submit'));
    await page.waitForSelector(byTestId('member-row'), { timeout: uiTimeoutMs });
  }

  async function marker(): Promise<unknown> {
    return page.evaluate(() => (window as unknown as { __marker?: unknown }).__marker);
  }

  it('logs in with the management token and shows three members and the leader', async () => {
    await buildBinary();
    mkdirSync(screenshotDir, { recursive: true });
    const first = await cluster.agent({ name: 'ui1', cpu: 1 });
    agents.push(first);
    const key = await waitFor('the cluster key', () =>
      Promise.resolve(/--key ([0-9a-f]{64})/.exec(first.log())?.[1] ?? null),
    );
    for (const name of ['ui2', 'ui3'])
      agents.push(await cluster.agent({ name, cpu: 1, join: first.address, key }));
    await cluster.explain(
      waitFor(
        'three alive members and three voters',
        async () => {
          const members = await first.json<MemberView[]>(['members']);
          const status = await first.json<StatusView>(['status']);
          return members.filter((m) => m.state === 'alive').length === 3 && status.voters.length === 3;
        },
        60_000,
      ),
    );
    const tokenFile = join(first.dataDir, 'management.token');
    token = await waitFor('the management token', () =>
      Promise.resolve(existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() || null : null),
    );
    // A small service, so the Jobs page has a job to show.
    const jobFile = join(cluster.root, 'web.yaml');
    writeFileSync(
      jobFile,
      [
        'name: web',
        'type: service',
        'count: 1',
        'task:',
        '  driver: exec',
        "  command: [sleep, '600']",
        '  cpuMillis: 100',
        '  memoryMiB: 16',
        '',
      ].join('\n'),
    );
    const applied = await first.cli(['job', 'apply', jobFile]);
    expect(applied.code, applied.stderr).toBe(0);
    // A namespace with a policy, and a read-only token for the last step.
    const policy = await first.cli([
      'namespace',
      'set',
      'team',
      '--weight',
      '3',
      '--quota-cpu',
      '2',
      '--quota-memory',
      '512',
    ]);
    expect(policy.code, policy.stderr).toBe(0);
    const read = await first.cli(['acl', 'token', 'create', '--name', 'viewer', '--role', 'read']);
    expect(read.code, read.stderr).toBe(0);
    readToken = read.stdout.trim();
    const leader = (await first.json<StatusView>(['status'])).leader?.name;
    ui = agents.find((a) => a.name !== leader) ?? first;

    browser = await puppeteer.launch({
      executablePath: chromium,
      headless: true,
      args: ['--no-sandbox', '--disable-dev-shm-usage'],
    });
    page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    page.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) cspViolations.push(message.text());
    });

    await login(ui);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="member-row"]').length === 3, {
      timeout: uiTimeoutMs,
    });
    await waitForText(byTestId('leader'), (text) => text === leader);

    // A fresh load with the token kept: from navigation to the members on the Overview.
    const started = Date.now();
    await page.goto(`http://${ui.api}/ui`, { waitUntil: 'domcontentloaded' });
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="member-row"]').length === 3, {
      timeout: uiTimeoutMs,
    });
    console.log(`dashboard first paint: ${Date.now() - started} ms`);
    const names = await page.$$eval(byTestId('member-row'), (rows) =>
      rows.map((r) => r.getAttribute('data-name')),
    );
    expect(names.sort()).toEqual(['ui1', 'ui2', 'ui3']);
    await waitForText(byTestId('leader'), (text) => text === leader);
    await page.waitForSelector(byTestId('stream-status', '[data-connected="true"]'), {
      timeout: uiTimeoutMs,
    });
    await screenshot('overview');
  });

  it('shows a submitted task appear and finish on the Tasks page without a reload', async () => {
    await nav('tasks');
    await page.waitForSelector(byTestId('task-count'), { timeout: uiTimeoutMs });
    await page.evaluate(() => {
      (window as unknown as { __marker?: unknown }).__marker = 1;
    });
    const run = await ui.cli(['run', '--name', 'hello', '--', 'sh', '-c', 'echo hello from shoal; sleep 2']);
    expect(run.code, run.stderr).toBe(0);
    taskId = run.stdout.trim();
    expect(taskId).toMatch(/^[0-9a-f]{12}$/);
    await page.waitForSelector(byTestId('task-row', `[data-id="${taskId}"]`), { timeout: uiTimeoutMs });
    await page.waitForSelector(byTestId('task-row', `[data-id="${taskId}"][data-state="finished"]`), {
      timeout: uiTimeoutMs,
    });
    expect(await marker()).toBe(1);
    await screenshot('tasks');
  });

  it("opens the task's page and shows its output", async () => {
    await page.click(`${byTestId('task-row', `[data-id="${taskId}"]`)} a`);
    await waitForText(byTestId('task-logs'), (text) => text.includes('hello from shoal'));
    await page.waitForSelector(byTestId('task-fields', '[data-state="finished"]'), { timeout: uiTimeoutMs });
    expect(await marker()).toBe(1);
    await screenshot('task');
  });

  it('shows why a task that cannot be placed waits, on the Queue page', async () => {
    const run = await ui.cli([
      'run',
      '--name',
      'nowhere',
      '--constraint',
      'zone=nowhere',
      '--',
      'sleep',
      '1',
    ]);
    expect(run.code, run.stderr).toBe(0);
    const stuck = run.stdout.trim();
    await nav('queue');
    const reason = await waitForText(
      `${byTestId('queue-row', `[data-id="${stuck}"]`)} ${byTestId('queue-reason')}`,
      (text) => /zone/.test(text),
    );
    console.log(`queue reason: ${reason}`);
    expect(await marker()).toBe(1);
    await screenshot('queue');
  });

  it('drains a node with its button on the Nodes page', async () => {
    const status = await ui.json<StatusView>(['status']);
    // Neither the browser's node nor the leader (killed next): the third one.
    const target = agents.find((a) => a !== ui && a.name !== status.leader?.name) ?? agents[0]!;
    await nav('nodes');
    const row = byTestId('node-row', `[data-name="${target.name}"]`);
    await page.waitForSelector(`${row} ${byTestId('drain-button')}`, { timeout: uiTimeoutMs });
    await page.click(`${row} ${byTestId('drain-button')}`);
    await page.waitForSelector(byTestId('node-row', `[data-name="${target.name}"][data-draining="true"]`), {
      timeout: uiTimeoutMs,
    });
    await page.waitForSelector(`${row} ${byTestId('undrain-button')}`, { timeout: uiTimeoutMs });
    const members = await ui.json<MemberView[]>(['members']);
    expect(members.find((m) => m.name === target.name)?.draining).toBe(true);
    expect(await marker()).toBe(1);
    await screenshot('nodes');

    await nav('namespaces');
    await page.waitForSelector(byTestId('namespace-row', '[data-name="default"]'), { timeout: uiTimeoutMs });
    await waitForText(
      `${byTestId('namespace-row', '[data-name="team"]')} ${byTestId('namespace-weight')}`,
      (t) => t === '3',
    );
    await screenshot('namespaces');
    await nav('jobs');
    await page.waitForSelector(byTestId('job-row', '[data-name="web"]'), { timeout: uiTimeoutMs });
    await screenshot('jobs');
  });

  it('shows the new leader on the Overview after the leader is SIGKILLed, without a reload', async () => {
    const before = await ui.json<StatusView>(['status']);
    const leader = agentNamed(before.leader?.name);
    if (leader === ui) {
      // The browser must be served by a node that survives: move it to another one (a new origin: log in).
      ui = agents.find((a) => a !== leader) ?? agents[0]!;
      await login(ui);
      await page.evaluate(() => {
        (window as unknown as { __marker?: unknown }).__marker = 1;
      });
    }
    await nav('overview');
    await waitForText(byTestId('leader'), (text) => text === leader.name);
    const killedAt = Date.now();
    leader.kill('SIGKILL');
    const shown = await waitForText(
      byTestId('leader'),
      (text) => text !== leader.name && agents.some((a) => a.name === text),
      90_000,
    );
    console.log(`new leader ${shown} on the dashboard ${Date.now() - killedAt} ms after the SIGKILL`);
    const after = await waitFor('the UI node to agree on the leader', async () => {
      const status = await ui.json<StatusView>(['status']);
      return status.leader?.name === shown ? status : null;
    });
    expect(after.term).toBeGreaterThan(before.term);
    await waitForText(byTestId('term'), (text) => Number(text) >= after.term);
    expect(await marker()).toBe(1);
    await screenshot('overview-after-failover');
  });

  it("shows a read-only token everything, the server's refusal of its drain, and a bad token's 401 at the login", async () => {
    await page.click(byTestId('logout'));
    await page.waitForSelector(byTestId('login-token'), { timeout: uiTimeoutMs });
    await page.type(byTestId('login-token'), readToken);
    await page.click(byTestId('login-submit'));
    await page.waitForSelector(byTestId('member-row'), { timeout: uiTimeoutMs });
    await nav('tasks');
    await page.waitForSelector(byTestId('task-row', `[data-id="${taskId}"]`), { timeout: uiTimeoutMs });
    await nav('nodes');
    const row = byTestId('node-row', `[data-name="${ui.name}"]`);
    await page.waitForSelector(`${row} ${byTestId('drain-button')}`, { timeout: uiTimeoutMs });
    await page.click(`${row} ${byTestId('drain-button')}`);
    const refusal = await waitForText(`${row} ${byTestId('action-error')}`, (text) => text.length > 0);
    console.log(`read-only drain: ${refusal}`);
    expect(refusal).toMatch(/PERMISSION_DENIED/);
    expect((await ui.json<MemberView[]>(['members'])).find((m) => m.name === ui.name)?.draining).toBe(false);
    expect(await marker()).toBe(1);

    // A token the cluster does not know (revoked, say): the first call's 401 sends the user to the login.
    await page.evaluate(() => localStorage.setItem('shoal.token', 'not-a-token'));
    await page.reload({ waitUntil: 'domcontentloaded' });
    const message = await waitForText(byTestId('login-error'), (text) => text.length > 0);
    expect(message).toMatch(/no such token/);
    expect(pageErrors).toEqual([]);
    expect(cspViolations).toEqual([]);
  });

  it('paints the Overview and the Tasks page of a cluster of 1,000 tasks (the figures are printed)', async () => {
    // A thousand pending tasks in one submission: they wait for a label no node has.
    const bulk = await ui.cli([
      'run',
      '--name',
      'bulk',
      '--replicas',
      '1000',
      '--constraint',
      'zone=nowhere',
      '--',
      'true',
    ]);
    expect(bulk.code, bulk.stderr).toBe(0);
    await page.evaluate((secret) => localStorage.setItem('shoal.token', secret), token);
    const started = Date.now();
    await page.goto(`http://${ui.api}/ui`, { waitUntil: 'domcontentloaded' });
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="member-row"]').length >= 2, {
      timeout: uiTimeoutMs,
    });
    const overviewMs = Date.now() - started;
    const tasksStarted = Date.now();
    await page.goto(`http://${ui.api}/ui#/tasks`, { waitUntil: 'domcontentloaded' });
    // The page draws the newest 500 rows and says so (a filter shows the others).
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="task-row"]').length === 500, {
      timeout: uiTimeoutMs,
    });
    const tasksMs = Date.now() - tasksStarted;
    console.log(
      `dashboard on 1,000+ tasks: Overview painted in ${overviewMs} ms, the Tasks page (500 rows drawn) in ${tasksMs} ms (target ≤ 1,000 ms)`,
    );
    // Generous for a loaded CI machine; the figure above is the measurement.
    expect(overviewMs).toBeLessThan(15_000);
    expect(pageErrors).toEqual([]);
  });
});
