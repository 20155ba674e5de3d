// Signs in on the Switchboard chat page in Debian's headless Chromium (playwright-core).
// Run by tests/browser.rs: `node tests/browser/signin.mjs URL SCREENSHOT_DIR`.
// The Rust side has registered `alice` and left her a private message; this script
// is refused the name without a password, then with a wrong one, signs in, sees the
// message kept while she was away, reloads (the kept token signs in again without the
// dialog) and logs out. It prints SIGNED_IN, RELOADED and LOGGED_OUT as it goes.
import { join } from 'node:path';
import { WAIT, withPage } from './launch.mjs';

await withPage('signin.mjs', async (page, url, screenshots, problems) => {
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
});
