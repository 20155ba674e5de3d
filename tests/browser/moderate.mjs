// Moderates from the Switchboard chat page in Debian's headless Chromium
// (playwright-core). Run by tests/browser.rs: `node tests/browser/moderate.mjs URL
// SCREENSHOT_DIR`. The Rust side has registered `alice`; this script signs in as
// her, makes #den (she owns it), waits for bob (a line-door guest) to join, mutes
// him for 10 minutes, waits for GO on stdin (the Rust side has seen bob refused),
// shows the room's rules, makes the room moderated with an open topic (/mode +m-t),
// kicks him and bans his address. It prints OWNER, MUTED, RULES, MODES and BANNED as
// it goes; the Rust side checks what bob saw.
import { join } from 'node:path';
import { WAIT, say as sayOn, signIn, waitForGo, withPage } from './launch.mjs';

await withPage('moderate.mjs', async (page, url, screenshots, problems) => {
  await signIn(page, url, 'alice', 'correct horse battery');
  const say = (line) => sayOn(page, line);
  await say('/join #den');
  await page.locator('#current-room', { hasText: '#den' }).waitFor(WAIT);
  console.log('OWNER');

  await page.locator('#messages li', { hasText: 'bob joined #den' }).waitFor(WAIT);
  await say('/mute bob 10m too loud');
  // The notice reads as text: no JSON after it.
  const muted = page.locator('#messages li.moderation', { hasText: 'muted bob (guest) for 10m (too loud)' });
  await muted.waitFor(WAIT);
  if (await muted.locator('.data').count()) throw new Error('the moderation notice showed its data');
  console.log('MUTED');
  // Bob tries to speak while muted; kicking him before he has would race his message.
  await waitForGo();

  await say('/rules');
  await page.locator('#messages li', { hasText: '#den: owned by alice; open to all' }).waitFor(WAIT);
  await page.locator('#messages li', { hasText: 'muted: bob (guest) by alice' }).waitFor(WAIT);
  console.log('RULES');

  // The room's modes from the page's /mode, letter by letter: moderated, topic open.
  await say('/mode +m-t');
  await page.locator('#messages li.moderation', { hasText: 'made the room moderated (only its operators speak) and let members set the topic' }).waitFor(WAIT);
  await say('/rules');
  const modes = page.locator('#messages li', { hasText: '#den: owned by alice; open to all; moderated (+m)' });
  await modes.waitFor(WAIT);
  if (/topic locked/.test(await modes.textContent())) throw new Error('the topic is still locked');
  console.log('MODES');

  await say('/kick bob bye now');
  await page.locator('#messages li', { hasText: 'kicked bob (bye now)' }).waitFor(WAIT);
  await say('/ban bob');
  await page.locator('#messages li', { hasText: 'banned bob (guest)' }).waitFor(WAIT);
  await page.screenshot({ path: join(screenshots, 'browser-moderation.png') });
  console.log('BANNED');

  const unexpected = problems.filter((p) => !/WebSocket/.test(p));
  if (unexpected.length) throw new Error(unexpected.join('\n'));
});
