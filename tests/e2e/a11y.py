"""Accessibility checks for the browser tests: axe-core on the current page, and keyboard-only helpers (Tab order,
the focused element, a visible focus indicator). Each takes a Playwright async `Page`; none needs the e2e `stack`."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Locator, Page

# WCAG 2.0 and 2.1, levels A and AA. Running only these tags leaves axe's best-practice rules (region,
# landmark-one-main, …) out: they are advice, not conformance failures.
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
AXE_OPTIONS = {
    "runOnly": {"type": "tag", "values": WCAG_TAGS},
    # Only violations are read: the passes, incomplete and inapplicable results come back with one node each.
    "resultTypes": ["violations"],
}
# The axe-core script is bundled in the package (read from disk once): no network at run time. Axe.run injects it
# with page.evaluate, which a page's Content-Security-Policy does not block (a <script> tag would be, under the
# console's `default-src 'self'`).
AXE = Axe()

# document.activeElement, followed into open shadow roots (a web component's inner input is what has focus). An
# element in an iframe is not followed: the iframe itself is reported (a PSP's card fields live in one).
_DEEP_ACTIVE = """() => {
    let el = document.activeElement;
    while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
    return el;
}"""

# Close to the accessible name, in the order the spec tries its sources; enough to recognise a form control or a
# button (a Locator from page.get_by_role(..., name=...) gives tab_until the exact computation when one matters).
_NAME = """el => {
    const text = s => (s || "").replace(/\\s+/g, " ").trim();
    const labelledBy = (el.getAttribute("aria-labelledby") || "").split(/\\s+/).filter(Boolean)
        .map(id => document.getElementById(id)).filter(Boolean).map(e => e.textContent).join(" ");
    const labels = [...(el.labels || [])].map(l => l.textContent).join(" ");
    const isButtonInput = el.tagName === "INPUT" && ["submit", "button", "reset"].includes(el.type);
    return text(labelledBy) || text(el.getAttribute("aria-label")) || text(labels)
        || (isButtonInput ? text(el.value) : "") || text(el.getAttribute("alt"))
        || (el === document.body ? "" : text(el.innerText)) || text(el.getAttribute("title"))
        || text(el.getAttribute("placeholder"));
}"""

_DESCRIBE = f"""() => {{
    const el = ({_DEEP_ACTIVE})();
    if (!el || el === document.body || el === document.documentElement) return "(nothing focused: body)";
    const name = ({_NAME})(el);
    return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
        + (name ? ' "' + (name.length > 60 ? name.slice(0, 57) + "..." : name) + '"' : "");
}}"""

_MATCHES = f"""wanted => {{
    const el = ({_DEEP_ACTIVE})();
    if (!el || el === document.body) return false;
    // A string that is no valid selector ("Pay €10.00") can only be a name.
    try {{ if (el.matches(wanted)) return true; }} catch (e) {{ if (!(e instanceof DOMException)) throw e; }}
    return ({_NAME})(el) === wanted.replace(/\\s+/g, " ").trim();
}}"""

_HAS_VISIBLE_FOCUS = f"""() => {{
    const el = ({_DEEP_ACTIVE})();
    if (!el || el === document.body || el === document.documentElement) return false;
    const sides = ["top", "right", "bottom", "left"], parts = ["style", "width", "color"];
    const look = () => {{
        const cs = getComputedStyle(el);
        // An outline or border with style none or width 0 draws nothing, whatever its colour says.
        const line = (style, width, color) => style === "none" || parseFloat(width) === 0 ? "none"
            : [style, width, color].join(" ");
        return JSON.stringify([
            line(cs.outlineStyle, cs.outlineWidth, cs.outlineColor), cs.outlineOffset, cs.boxShadow,
            ...sides.map(s => line(...parts.map(p => cs.getPropertyValue(`border-${{s}}-${{p}}`)))),
            cs.backgroundColor, cs.color, cs.textDecorationLine,
        ]);
    }};
    // A focus style that transitions in (or after a delay) would be read before it shows, right after the Tab:
    // with transitions off, the computed style is the end state at once.
    const transition = [el.style.getPropertyValue("transition"), el.style.getPropertyPriority("transition")];
    el.style.setProperty("transition", "none", "important");
    const wasVisible = el.matches(":focus-visible");
    const focused = look();
    el.blur();
    const blurred = look();
    // Back as it was, the keyboard focus ring included, so the next Tab goes on from here.
    el.focus({{preventScroll: true, focusVisible: wasVisible}});
    el.style.setProperty("transition", ...transition);
    return focused !== blurred;
}}"""


async def axe_violations(page: Page, *, impacts: Sequence[str] = ("serious", "critical")) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.0/2.1 A and AA violations on the page as it is now, those of `impacts` only: each as
    {id, impact, help, nodes: [CSS selector of each offending element]}."""
    results = await AXE.run(page, options=AXE_OPTIONS)
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [_selector(n["target"]) for n in v["nodes"]]}
        for v in results.response["violations"] if v["impact"] in impacts
    ]


def _selector(target: Any) -> str:
    # axe gives a list of selectors, one per document, outermost first (more than one for an element inside an
    # iframe), and a list within it for each shadow root crossed.
    return " >>> ".join(_selector(t) for t in target) if isinstance(target, list) else str(target)


async def assert_accessible(page: Page, name: str) -> None:
    """Fails listing every serious or critical violation (rule, what it asks, where) on the page called `name`."""
    violations = await axe_violations(page)
    if violations:
        lines = [f"{v['id']} ({v['impact']}): {v['help']}\n    at " + "\n    at ".join(v["nodes"]) for v in violations]
        raise AssertionError(f"{name} ({page.url}): {len(violations)} accessibility violation(s)\n  "
                             + "\n  ".join(lines))


async def focused_description(page: Page) -> str:
    """The focused element as tag#id "name", e.g. `button#pay "Pay now"`, for messages."""
    return await page.evaluate(_DESCRIBE)


async def has_visible_focus(page: Page) -> bool:
    """Whether the focused element looks different focused than blurred (outline, box-shadow, border, colours).
    It blurs and refocuses the element, so its blur and focus handlers run."""
    return await page.evaluate(_HAS_VISIBLE_FOCUS)


Predicate = Callable[[Page], bool | Awaitable[bool]]


async def tab_until(page: Page, predicate_or_selector: str | Locator | Predicate, max_tabs: int = 40) -> str:
    """Presses Tab until the focused element matches: a CSS selector or an accessible name (a string), a Locator
    (its element has focus), or a predicate called with the page. Returns the focused element's description;
    fails with every element focused on the way when `max_tabs` presses do not get there."""
    seen: list[str] = []
    for _ in range(max_tabs):
        await page.keyboard.press("Tab")
        if await _matches(page, predicate_or_selector):
            return await focused_description(page)
        seen.append(await focused_description(page))
    raise AssertionError(f"{predicate_or_selector!r} not reached by keyboard in {max_tabs} Tab presses; focus went:\n  "
                         + "\n  ".join(f"{i}. {d}" for i, d in enumerate(seen, 1)))


async def _matches(page: Page, wanted: str | Locator | Predicate) -> bool:
    if isinstance(wanted, str):
        return await page.evaluate(_MATCHES, wanted)
    if isinstance(wanted, Locator):
        # evaluate_all, as it does not wait: an element not there (yet) is simply not focused.
        return await wanted.evaluate_all(f"els => els.includes(({_DEEP_ACTIVE})())")
    result = wanted(page)
    return await result if inspect.isawaitable(result) else bool(result)
