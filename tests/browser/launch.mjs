// Shared by the browser scripts: their arguments (URL SCREENSHOT_DIR) and Debian's
// headless Chromium in a throwaway profile, with the flags this closed network needs.
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const WAIT = { timeout: 15000 };

/// Parse `node SCRIPT URL SCREENSHOT_DIR`, launch Chromium, run `body(page, url,
/// screenshots, problems)`, and always close the browser and delete its profile.
export async function withPage(script, body) {
  const [url, screenshots] = process.argv.slice(2);
  if (!url || !screenshots) {
    console.error(`usage: node ${script} URL SCREENSHOT_DIR`);
    process.exit(2);
  }
  mkdirSync(screenshots, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'switchboard-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1100, height: 680 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync',
    ],
  });
  try {
    const page = context.pages()[0] || await context.newPage();
    const problems = [];
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
    });
    await body(page, url, screenshots, problems);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

// Lines the Rust side writes to the script's stdin, read in order.
let stdinLines;

/// Wait until the Rust side writes `GO`: the script must not move on while the other
/// clients are still checking what the last step did to them.
export async function waitForGo() {
  stdinLines ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const { value, done } = await stdinLines.next();
  if (done || value !== 'GO') throw new Error(`expected GO on stdin, got ${done ? 'end of input' : value}`);
}

/// Type `line` into the page's message box and send it.
export async function say(page, line) {
  await page.fill('#say-input', line);
  await page.press('#say-input', 'Enter');
}

/// Open the page at `url` and sign in to `nick`'s account with `password`.
export async function signIn(page, url, nick, password) {
  await page.goto(url, WAIT);
  await page.locator('#status.connected').waitFor(WAIT);
  await page.fill('#nick-input', nick);
  await page.fill('#password-input', password);
  await page.press('#password-input', 'Enter');
  await page.locator('#me', { hasText: `${nick} ✓` }).waitFor(WAIT);
}
