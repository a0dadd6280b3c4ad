// Every page read without JavaScript, checked by axe-core, and fitted to
// a phone's width.
//
// The cluster: as for pipeline.test.mjs (`web` succeeded, `gate` waiting
// at its approval), read as the admin, who sees every page and every button.
import { after, before } from "node:test";
import assert from "node:assert/strict";
import * as c from "./lib.mjs";

let browser;
let pages;
before(async () => {
  if (c.skip) return;
  browser = await c.launch();
  const [latest] = c.sluiceJson(["pipeline", "history", "web"]).pipelineExecutionSummaries;
  const id = latest.pipelineExecutionId;
  const revision = latest.sourceRevisions?.[0]?.revisionId;
  // Each page, and what a reader must find on it without any script.
  pages = [
    { path: "/", h1: "Pipelines", shows: (p) => p.getByRole("link", { name: "web", exact: true }) },
    { path: "/pipelines/web", h1: "web", shows: (p) => p.locator('#stages section[data-stage="Deploy"][data-status="Succeeded"]') },
    { path: "/pipelines/gate", h1: "gate", shows: (p) => p.locator("p.approval-needs") },
    { path: "/pipelines/web/executions", h1: "Executions of web", shows: (p) => p.getByRole("link", { name: id }) },
    { path: `/pipelines/web/executions/${id}`, h1: `Execution ${id}`, shows: (p) => p.getByRole("heading", { name: "Timeline" }) },
    {
      path: `/pipelines/web/executions/${id}/actions/Build/Compile`,
      h1: "Build / Compile",
      shows: (p) => p.getByRole("log").getByText("built", { exact: true }),
    },
    { path: "/agents", h1: "Agents", shows: (p) => p.getByRole("table", { name: "Agents" }) },
    { path: "/plugins", h1: "Plugins", shows: (p) => p.getByRole("table", { name: "Plugins" }) },
    { path: "/secrets", h1: "Secrets", shows: (p) => p.getByRole("heading", { level: 1, name: "Secrets" }) },
    { path: "/audit", h1: "Audit log", shows: (p) => p.getByRole("table", { name: "Audit records" }) },
    { path: "/revisions", h1: "Revision flow", shows: (p) => p.getByRole("heading", { name: "Recent revisions" }) },
  ];
  if (revision) {
    pages.push({ path: `/revisions/${revision}`, h1: `Revision ${revision}`, shows: (p) => p.getByRole("link", { name: "web" }).first() });
  }
});
after(async () => {
  await browser?.close();
});

/** The screenshot name of a path: `/pipelines/web` -> `pipelines-web`. */
const named = (path) => path.replace(/^\/$/, "/pipelines").replace(/^\//, "").replace(/[^A-Za-z0-9]+/g, "-").slice(0, 80);

c.scenario("every page reads without JavaScript", async () => {
  const ctx = await c.context(browser, { javaScriptEnabled: false });
  // Signing in is a plain form too.
  const page = await c.signIn(ctx, c.token("admin"), "/");
  for (const { path, h1, shows } of pages) {
    const answer = await page.goto(path);
    assert.equal(answer.status(), 200, `${path}: ${answer.status()}`);
    await page.getByRole("heading", { level: 1, name: h1, exact: true }).waitFor();
    await shows(page).first().waitFor({ timeout: 5_000 });
    await c.screenshot(page, `nojs-${named(path)}`);
  }
  // A change without a script: the form posts, the page comes back with its message.
  await page.goto("/pipelines/web");
  const deploy = page.getByRole("region", { name: "Deploy", exact: true });
  await c.disclose(deploy, "Disable transition…");
  await deploy.getByLabel("Reason").fill("no script needed");
  await Promise.all([page.waitForURL("**/pipelines/web"), deploy.getByRole("button", { name: "Disable transition" }).click()]);
  await page.getByRole("status").waitFor();
  await page.getByRole("region", { name: "Deploy", exact: true }).locator('[data-transition="disabled"]').waitFor();
  await page.getByRole("region", { name: "Deploy", exact: true }).getByRole("button", { name: "Enable transition" }).click();
  await page.getByRole("region", { name: "Deploy", exact: true }).getByText("Disable transition…").waitFor();
  await ctx.close();
});

c.scenario("every page passes axe-core with no serious or critical violation", async () => {
  const ctx = await c.context(browser);
  const signIn = await ctx.newPage();
  await signIn.goto("/sign-in");
  const findings = { "/sign-in": await c.axeFindings(signIn) };
  await signIn.close();
  // As the admin: every page, every form and button.
  const page = await c.signIn(ctx, c.token("admin"), "/");
  for (const { path, h1 } of pages) {
    await page.goto(path);
    await page.getByRole("heading", { level: 1, name: h1, exact: true }).waitFor();
    findings[path] = await c.axeFindings(page);
  }
  // The forms hidden in disclosures, opened.
  await page.goto("/pipelines/gate");
  for (const summary of await page.locator("main summary").all()) await summary.click();
  findings["/pipelines/gate (forms open)"] = await c.axeFindings(page);
  const lesser = Object.fromEntries(Object.entries(findings).map(([path, f]) => [path, f.lesser]));
  console.log(`axe-core: pages checked ${Object.keys(findings).length}; minor or moderate findings per page: ${JSON.stringify(lesser)}`);
  const serious = Object.values(findings).flatMap((f) => f.serious);
  assert.deepEqual(serious, [], "serious or critical accessibility violations");
  await ctx.close();
});

c.scenario("on a phone every page fits the screen's width", async () => {
  const ctx = await c.context(browser, { viewport: { width: 375, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const wide = [];
  const signIn = await ctx.newPage();
  await signIn.goto("/sign-in");
  wide.push(await c.overflow(signIn));
  await signIn.close();
  const page = await c.signIn(ctx, c.token("admin"), "/");
  for (const { path, h1 } of pages) {
    await page.goto(path);
    await page.getByRole("heading", { level: 1, name: h1, exact: true }).waitFor();
    const why = await c.overflow(page);
    if (why) {
      wide.push(why);
      await c.screenshot(page, `phone-too-wide-${named(path)}`);
    }
  }
  assert.deepEqual(wide.filter(Boolean), [], "pages that scroll sideways on a phone");
  await page.goto("/pipelines/web");
  // The stages stack: Deploy is below Build, not beside it.
  const build = await page.getByRole("region", { name: "Build", exact: true }).boundingBox();
  const deploy = await page.getByRole("region", { name: "Deploy", exact: true }).boundingBox();
  assert.ok(deploy.y >= build.y + build.height - 1, `Deploy ${JSON.stringify(deploy)} is not below Build ${JSON.stringify(build)}`);
  await c.screenshot(page, "phone-pipeline-web");
  await ctx.close();
});

c.scenario("the keyboard reaches every control, with a visible focus, and opens the forms", async () => {
  const ctx = await c.context(browser);
  const page = await c.signIn(ctx, c.token("admin"), "/pipelines/web");
  await page.getByRole("heading", { level: 1, name: "web" }).waitFor();
  // First Tab: the skip link; Enter: into the content.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent.trim()), "Skip to content");
  await page.keyboard.press("Enter");
  assert.equal(await page.evaluate(() => document.activeElement.id), "main");
  // Tab through the page: every stop shows where the focus is.
  const stops = [];
  for (let i = 0; i < 80; i++) {
    await page.keyboard.press("Tab");
    const stop = await page.evaluate(() => {
      const el = document.activeElement;
      if (!el || el === document.body) return null;
      const style = getComputedStyle(el);
      const visible = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
      return { name: (el.getAttribute("aria-label") || el.textContent).trim().replace(/\s+/g, " ").slice(0, 60), tag: el.tagName.toLowerCase(), visible };
    });
    if (!stop) break;
    stops.push(stop);
  }
  const names = stops.map((s) => s.name);
  for (const want of ["Start execution…", "Disable transition…", "Logs of Compile"]) {
    assert.ok(names.some((n) => n.startsWith(want)), `Tab never reaches "${want}": ${JSON.stringify(names)}`);
  }
  const unseen = stops.filter((s) => !s.visible);
  assert.deepEqual(unseen, [], "focus stops without a visible focus indicator");
  // A disclosure opens from the keyboard, and its field takes the typing.
  await page.locator("summary", { hasText: "Start execution…" }).focus();
  await page.keyboard.press("Enter");
  await page.getByLabel("GREETING").focus();
  await page.keyboard.type("typed");
  assert.equal(await page.getByLabel("GREETING").inputValue(), "typed");
  console.log(`keyboard: ${stops.length} focus stops on /pipelines/web, each with a visible focus`);
  await ctx.close();
});

c.scenario("the README's picture: a pipeline page", async () => {
  const ctx = await c.context(browser, { viewport: { width: 1200, height: 720 } });
  const page = await c.signIn(ctx, c.token("admin"), "/pipelines/web");
  await page.locator('#stages section[data-stage="Deploy"][data-status="Succeeded"]').waitFor();
  const dir = c.env.SLUICE_SCREENSHOTS || "screenshots";
  await page.screenshot({ path: `${dir}/readme-pipeline.png`, fullPage: true });
  console.log(`screenshot saved: ${dir}/readme-pipeline.png (docs/console.png is a copy)`);
  await ctx.close();
});
