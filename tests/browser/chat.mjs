// Drives the Switchboard chat page in Debian's headless Chromium (via playwright-core).
// Run by tests/browser.rs: `node tests/browser/chat.mjs URL SCREENSHOT_DIR`.
// Talks to the Rust side over stdout: prints READY once named (the Rust test then
// sends from its TCP line client), then SENT after sending from the page.
import { join } from 'node:path';
import { WAIT, withPage } from './launch.mjs';

await withPage('chat.mjs', async (page, url, screenshots, problems) => {
  page.on('dialog', (dialog) => { problems.push(`unexpected dialog: ${dialog.message()}`); dialog.dismiss(); });

  await page.goto(url, WAIT);
  await page.locator('#status.connected').waitFor(WAIT);

  // A taken name is refused inline, in the dialog.
  await page.fill('#nick-input', 'tcpuser');
  await page.press('#nick-input', 'Enter');
  await page.locator('#nick-error', { hasText: 'already in use' }).waitFor(WAIT);
  await page.fill('#nick-input', 'webuser');
  await page.press('#nick-input', 'Enter');
  await page.locator('#nick-dialog').waitFor({ state: 'hidden', ...WAIT });
  await page.locator('#me', { hasText: 'webuser' }).waitFor(WAIT);
  await page.locator('#members li', { hasText: 'tcpuser' }).waitFor(WAIT);
  console.log('READY');

  // The TCP client's message arrives, with its sender; markup in it stays text.
  const fromTcp = page.locator('#messages li.message', { hasText: 'hello from tcp' });
  await fromTcp.waitFor(WAIT);
  const sender = await fromTcp.locator('.from').textContent();
  if (sender !== 'tcpuser') throw new Error(`sender shown as ${JSON.stringify(sender)}`);
  await page.locator('#messages li.message', { hasText: '<img src=x onerror=alert(1)>' }).waitFor(WAIT);
  if (await page.locator('#messages img').count() !== 0) throw new Error('user text became markup');

  // Send from the page; the input keeps focus for the next line.
  await page.fill('#say-input', 'hello from the browser');
  await page.press('#say-input', 'Enter');
  await page.locator('#messages li.message', { hasText: 'hello from the browser' }).waitFor(WAIT);
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
  if (focused !== 'say-input') throw new Error(`focus moved to ${focused}`);
  console.log('SENT');

  // A private message from the TCP side opens a private conversation.
  await page.locator('#privates li', { hasText: 'tcpuser' }).waitFor(WAIT);

  await page.screenshot({ path: join(screenshots, 'browser-chat.png') });
  await page.setViewportSize({ width: 390, height: 760 });
  await page.waitForTimeout(300); // the sidebar slides away on narrow screens
  await page.screenshot({ path: join(screenshots, 'browser-chat-phone.png') });
  await page.click('#menu');
  await page.waitForTimeout(300); // let the sidebar's slide-in finish for the picture
  await page.screenshot({ path: join(screenshots, 'browser-chat-phone-menu.png') });

  await page.click('#menu'); // close the sidebar again
  console.log('SCREENSHOTS');

  // The server restarts: the page shows it is offline, reconnects by itself, names
  // itself again and receives messages as before.
  await page.locator('#status.offline').waitFor(WAIT);
  console.log('OFFLINE');
  // The page backs off between attempts (about 0.5, 1.5, 3.5, 7.5, 15.5 s after the
  // close, ±25%): a slow restart can push its next try well past WAIT.
  const RECONNECT_WAIT = { timeout: 45000 };
  await page.locator('#status.connected').waitFor(RECONNECT_WAIT);
  await page.locator('#messages li.message', { hasText: 'back again' }).waitFor(WAIT);
  if (await page.locator('#me').textContent() !== 'webuser') throw new Error('name not restored');

  // Connection errors while the server was down are expected; nothing else is.
  const unexpected = problems.filter((p) => !/WebSocket|ERR_CONNECTION_REFUSED/.test(p));
  if (unexpected.length) throw new Error(unexpected.join('\n'));
  console.log('DONE');
});
