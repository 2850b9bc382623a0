// The web page at / in headless Chromium (Debian's `chromium`, driven by playwright-core
// with executablePath): load it, search the demo's classes, pick one, set seed and
// count, generate, and see the images arrive (each byte-equal to generate()'s) with the
// progress bar full and a download button per image. Skipped, saying so, when no
// Chromium binary is installed (`apt-get install chromium`; $CHROMIUM_PATH overrides).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { hasModelAddon } from '../api/helpers.js';
import { reference, startRealServer, type RealServer } from './demo-server.js';

const chromium = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p): p is string => !!p && existsSync(p));
if (!chromium) console.warn('test/serve/page.test.ts: skipped: no Chromium binary (apt-get install chromium, or set CHROMIUM_PATH)');

describe.skipIf(!chromium || !hasModelAddon())('web page (headless Chromium)', () => {
  let s: RealServer;
  let browser: import('playwright-core').Browser;
  beforeAll(async () => {
    s = await startRealServer({ maxRows: 16 });
    const pw = await import('playwright-core');
    browser = await pw.chromium.launch({ executablePath: chromium, args: ['--no-sandbox'] });
  });
  afterAll(async () => {
    await browser?.close();
    await s?.close();
  });

  it('load, pick a class, generate, see the images', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(s.url + '/');
    await page.waitForFunction(() => document.querySelectorAll('#class-list option').length === 10);
    await page.fill('#search', 'hea');
    expect(await page.locator('#class-list option').count()).toBe(1);
    expect(await page.textContent('#chosen')).toBe('Chosen: 4 heart');
    expect(await page.inputValue('#guidance')).toBe('2');
    await page.fill('#seed', '11');
    await page.fill('#count', '3');
    await page.click('#generate');
    await page.waitForFunction(() => document.querySelectorAll('#images figure.done').length === 3, undefined, { timeout: 60_000 });
    await page.waitForFunction(() => (document.getElementById('status')?.textContent ?? '').includes('3 images in'));
    expect(await page.locator('#progress').evaluate((el) => (el as HTMLProgressElement).value)).toBe(1);
    const srcs = await page.locator('#images figure img').evaluateAll((imgs) => imgs.map((i) => (i as HTMLImageElement).src));
    const ref = await reference(s.generator, [4, 4, 4], { seed: 11 });
    srcs.forEach((src, k) => expect(Buffer.from(src.replace(/^data:image\/png;base64,/, ''), 'base64').equals(ref.pngs[k]!)).toBe(true));
    // every image decoded in the browser at the demo's 128 px
    expect(await page.locator('#images figure img').evaluateAll((imgs) => imgs.map((i) => (i as HTMLImageElement).naturalWidth))).toEqual([128, 128, 128]);
    const downloads = page.locator('#images a.download');
    expect(await downloads.count()).toBe(3);
    expect(await downloads.first().getAttribute('download')).toBe('rargen-4-seed11-0.png');
    const [dl] = await Promise.all([page.waitForEvent('download'), downloads.nth(1).click()]);
    expect(dl.suggestedFilename()).toBe('rargen-4-seed11-1.png');
    // a bad value shows the server's message and its field
    await page.fill('#count', '0');
    await page.evaluate(() => document.getElementById('count')!.removeAttribute('min'));
    await page.click('#generate');
    await page.waitForFunction(() => !document.getElementById('error')!.hidden);
    expect(await page.textContent('#error')).toMatch(/for n but received 0 \(n\)/);
    expect(errors).toEqual([]);
    await page.close();
  });
});
