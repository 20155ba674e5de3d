// Signs in on the Switchboard chat page in Debian's headless Chromium (playwright-core).
// Run by tests/browser.rs: `node tests/browser/signin.mjs URL SCREENSHOT_DIR`.
// The Rust side has registered `alice` and left her a private message; this script
// is refused the name without a password, then with a wrong one, signs in, sees the
// message kept while she was away, reloads (the kept token signs in again without the
// dialog) and logs out. It prints SIGNED_IN, RELOADED and LOGGED_OUT as it goes.
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, screenshots] = process.argv.slice(2);
if (!url || !screenshots) {
  console.error('usage: node signin.mjs URL SCREENSHOT_DIR');
  process.exit(2);
}
mkdirSync(screenshots, { recursive: true });
const WAIT = { timeout: 15000 };
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

  await page.goto(url, WAIT);
  await page.locator('#status.connected').waitFor(WAIT);

  // A registered name needs its password; a wrong one is refused in the dialog.
  await page.fill('#nick-input', 'alice');
  await page.press('#nick-input', 'Enter');
  await page.locator('#nick-error', { hasText: 'registered' }).waitFor(WAIT);
  await page.fill('#password-input', 'not her password');
  await page.press('#password-input', 'Enter');
  await page.locator('#nick-error', { hasText: 'wrong password' }).waitFor(WAIT);
  await page.fill('#password-input', 'correct horse battery');
  await page.press('#password-input', 'Enter');
  await page.locator('#nick-dialog').waitFor({ state: 'hidden', ...WAIT });
  await page.locator('#me', { hasText: 'alice ✓' }).waitFor(WAIT);
  await page.locator('#messages li.notice', { hasText: '1 message while you were away' }).waitFor(WAIT);
  await page.locator('#privates li', { hasText: 'bob' }).waitFor(WAIT);
  await page.click('#privates li button.name');
  await page.locator('#messages li.message', { hasText: 'kept for you' }).waitFor(WAIT);
  await page.screenshot({ path: join(screenshots, 'browser-signed-in.png') });
  console.log('SIGNED_IN');

  // A reload signs in again with the kept token: no dialog, no password.
  await page.reload(WAIT);
  await page.locator('#me', { hasText: 'alice ✓' }).waitFor(WAIT);
  if (await page.locator('#nick-dialog').isVisible()) throw new Error('the reload asked for the name again');
  console.log('RELOADED');

  // Logging out forgets the token: the page asks for a name again, also after a reload.
  await page.click('#logout');
  await page.locator('#nick-dialog').waitFor({ state: 'visible', ...WAIT });
  await page.reload(WAIT);
  await page.locator('#nick-dialog').waitFor({ state: 'visible', ...WAIT });
  const kept = await page.evaluate(() => localStorage.getItem('switchboard.token'));
  if (kept) throw new Error('the token outlived the logout');
  console.log('LOGGED_OUT');

  const unexpected = problems.filter((p) => !/WebSocket/.test(p));
  if (unexpected.length) throw new Error(unexpected.join('\n'));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
