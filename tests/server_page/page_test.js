// The chat page in headless Chromium: type a message, send it, wait for
// the streamed reply, save a screenshot. Run by scripts/server-page-test.sh.
const { chromium } = require('playwright-core');

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(process.env.RKINFER_BASE_URL + '/');
    await page.click('summary');
    await page.fill('#max', '16');
    await page.fill('#temp', '0');
    await page.fill('#msg', 'Name a fruit.');
    await page.click('#send');
    const reply = page.locator('#log .assistant[data-done="1"]');
    await reply.waitFor({ timeout: 120000 });
    const text = (await reply.textContent()).trim();
    if (!text) throw new Error('the reply is empty');
    if (await page.locator('#log .error').count()) throw new Error('the page shows an error');
    if (errors.length) throw new Error('page errors: ' + errors.join('; '));
    const user = await page.locator('#log .user').textContent();
    if (user !== 'Name a fruit.') throw new Error('the message is not shown: ' + user);
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
    console.log(`ok: the chat page round-trips a message; reply: ${JSON.stringify(text)}; screenshot ${process.env.SCREENSHOT}`);
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error('FAILED:', e);
  process.exit(1);
});
