// Devices from the Switchboard chat page in Debian's headless Chromium (playwright-core).
// Run by tests/browser.rs: `node tests/browser/command.mjs URL SCREENSHOT_DIR`. The
// Rust side has registered `alice`; this script signs in as her, joins #devices, adds
// device drone5 and prints `TOKEN <token>` from the page. The Rust side then speaks
// for the device over real UDP: its telemetry must appear on the page (TELEMETRY),
// and the command the page sends (`/command drone5 land {"speed":2}`) is answered by
// datagram; the page must show the answer (ANSWERED).
import { join } from 'node:path';
import { WAIT, say as sayOn, signIn, withPage } from './launch.mjs';

await withPage('command.mjs', async (page, url, screenshots, problems) => {
  await signIn(page, url, 'alice', 'correct horse battery');
  const say = (line) => sayOn(page, line);
  await say('/join #devices');
  await page.locator('#current-room', { hasText: '#devices' }).waitFor(WAIT);
  await say('/device add drone5');
  const added = page.locator('#messages li', { hasText: 'device drone5 added' });
  await added.waitFor(WAIT);
  const token = (await added.textContent()).match(/[0-9a-f]{64}/);
  if (!token) throw new Error(`no token in: ${await added.textContent()}`);
  console.log(`TOKEN ${token[0]}`);

  await page.locator('#messages li.message', { hasText: 'battery 97' }).waitFor(WAIT);
  await page.locator('#members li', { hasText: 'drone5 (device)' }).waitFor(WAIT);
  console.log('TELEMETRY');

  await say('/command drone5 land {"speed":2}');
  await page.locator('#messages li.command-result', { hasText: 'drone5: land: ok {"landed":true}' }).waitFor(WAIT);
  await page.screenshot({ path: join(screenshots, 'browser-device-command.png') });
  console.log('ANSWERED');

  const unexpected = problems.filter((p) => !/WebSocket/.test(p));
  if (unexpected.length) throw new Error(unexpected.join('\n'));
});
