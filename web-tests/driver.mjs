// The browser driver of Tejido's browser tests (tests/tests/web_browser.rs, through
// tests/src/browser.rs): launches Debian's headless Chromium through playwright-core (never a
// downloaded browser) and runs one command per JSON line read on stdin, answering one JSON line
// on stdout for each, so a Rust test drives the browser step by step while it drives devices
// and checks the server.
//
// First line printed: {"ready": true, "version": "<chromium version>"} or, when the browser does
// not start, {"ready": false, "error": "..."} (and exit code 1).
// Commands: {"id": N, "cmd": NAME, ...arguments}; answers: {"id": N, "ok": true, "value": ...} or
// {"id": N, "ok": false, "error": "..."}. Every command has a deadline (`timeout_ms`, default
// 15 s): an answer always comes.
//
//   goto {url}                      → {url, status}   navigate and wait for the load event
//   fill {selector, value}          → null
//   select {selector, value}        → the selected values
//   click {selector, navigates?}    → null            with navigates: also wait for the page
//                                                      the click loads (a form post, a link)
//   wait {selector, state?}         → null            state: attached|detached|visible|hidden
//   text {selector}                 → the element's innerText
//   count {selector}                → how many elements match (no waiting)
//   screenshot {path}               → path            the whole page, as PNG
//   download {selector, path}       → suggested file name; clicks a link and saves what it sends
//   url {}                          → the current URL
//   close {}                        → null, then the driver exits
//
// Environment: TEJIDO_CHROMIUM (default /usr/bin/chromium).

import { createInterface } from 'node:readline';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

const executablePath = process.env.TEJIDO_CHROMIUM || '/usr/bin/chromium';
const DEFAULT_TIMEOUT_MS = 15000;

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(message) {
  send({ ready: false, error: message });
  process.exit(1);
}

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  fail(`playwright-core is not installed in web-tests/node_modules (run scripts/setup, or npm ci in web-tests): ${e.message}`);
}
if (!existsSync(executablePath)) {
  fail(`Chromium is missing at ${executablePath} (run scripts/setup, or apt-get install -y chromium)`);
}

let browser;
try {
  const args = ['--disable-dev-shm-usage', '--disable-gpu', '--no-first-run', '--lang=es'];
  // Chromium refuses to run as root with its sandbox; CI and these machines run as root.
  if (typeof process.getuid === 'function' && process.getuid() === 0) args.push('--no-sandbox');
  browser = await chromium.launch({ executablePath, headless: true, args, timeout: 30000 });
} catch (e) {
  fail(`Chromium at ${executablePath} did not start: ${e.message}`);
}
const context = await browser.newContext({
  viewport: { width: 1280, height: 900 },
  acceptDownloads: true,
  locale: 'es-PA',
});
const page = await context.newPage();
page.setDefaultTimeout(DEFAULT_TIMEOUT_MS);
page.setDefaultNavigationTimeout(DEFAULT_TIMEOUT_MS);
send({ ready: true, version: browser.version() });

function need(args, name) {
  const v = args[name];
  if (typeof v !== 'string' || v === '') throw new Error(`the command needs a string "${name}"`);
  return v;
}

const commands = {
  async goto(a) {
    const res = await page.goto(need(a, 'url'), { waitUntil: 'load' });
    return { url: page.url(), status: res ? res.status() : null };
  },
  async fill(a) {
    await page.fill(need(a, 'selector'), String(a.value ?? ''));
    return null;
  },
  async select(a) {
    return await page.selectOption(need(a, 'selector'), String(a.value ?? ''));
  },
  async click(a) {
    const selector = need(a, 'selector');
    if (a.navigates) {
      // The load event of the page the click leads to (after any redirects).
      await Promise.all([page.waitForEvent('load'), page.click(selector)]);
    } else {
      await page.click(selector);
    }
    return null;
  },
  async wait(a) {
    await page.waitForSelector(need(a, 'selector'), { state: a.state || 'visible' });
    return null;
  },
  async text(a) {
    return await page.innerText(need(a, 'selector'));
  },
  async count(a) {
    return await page.locator(need(a, 'selector')).count();
  },
  async screenshot(a) {
    const path = need(a, 'path');
    mkdirSync(dirname(path), { recursive: true });
    await page.screenshot({ path, fullPage: true });
    return path;
  },
  async download(a) {
    const path = need(a, 'path');
    mkdirSync(dirname(path), { recursive: true });
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(need(a, 'selector'))]);
    const failure = await download.failure();
    if (failure) throw new Error(`the download failed: ${failure}`);
    await download.saveAs(path);
    return download.suggestedFilename();
  },
  async url() {
    return page.url();
  },
  async close() {
    await browser.close();
    return null;
  },
};

function withDeadline(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

// Commands run one at a time, in the order they arrive.
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
let closing = false;
for await (const line of lines) {
  if (line.trim() === '') continue;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    send({ id: null, ok: false, error: `not JSON: ${e.message}` });
    continue;
  }
  const id = msg.id ?? null;
  const run = commands[msg.cmd];
  if (!run) {
    send({ id, ok: false, error: `unknown command ${JSON.stringify(msg.cmd)}` });
    continue;
  }
  const ms = Number.isFinite(msg.timeout_ms) ? msg.timeout_ms : DEFAULT_TIMEOUT_MS;
  // Playwright's own waits end at the deadline; the race is a backstop for anything else.
  page.setDefaultTimeout(ms);
  page.setDefaultNavigationTimeout(ms);
  try {
    const value = await withDeadline(run(msg), ms + 2000, `${msg.cmd} ${msg.selector ?? msg.url ?? ''}`.trim());
    send({ id, ok: true, value: value ?? null });
  } catch (e) {
    send({ id, ok: false, error: String(e && e.message ? e.message : e) });
  }
  if (msg.cmd === 'close') {
    closing = true;
    break;
  }
}
// stdin closed (the test ended or died) or close was asked: never outlive the test.
if (!closing) await browser.close().catch(() => {});
process.exit(0);
