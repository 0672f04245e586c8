//! A tab: navigating, evaluating, waiting, clicking, typing, screenshots, and the errors the
//! page reported.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::cdp::{COMMAND_TIMEOUT, Cdp, Event, NoAnswer, Refusal};
use super::{lock, string_field};

/// How long a navigation may take to fire its load event.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause between two checks of [`Page::wait_for`].
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The least time a check of [`Page::wait_for`] gets for its answer, so the last check, at
/// the deadline, still gets one.
const MIN_CHECK_TIME: Duration = Duration::from_secs(1);

/// How much of the page's text a [`Page::wait_for`] timeout shows.
const BODY_TEXT_SHOWN: usize = 2_000;

/// A tab, attached with its own CDP session. It may outlive its [`Browser`](super::Browser),
/// but every call fails once the browser is gone. Dropping it closes the tab.
pub struct Page {
    cdp: Arc<Cdp>,
    session: String,
    target: String,
    errors: Mutex<Errors>,
}

/// The error events not yet read, and the errors read from them so far.
struct Errors {
    events: mpsc::UnboundedReceiver<Event>,
    seen: Vec<String>,
}

impl Page {
    /// Opens a tab on `about:blank` and attaches to it (flattened: this page's commands carry
    /// its session id on the browser's socket), collecting its errors from then on.
    pub(super) async fn open(cdp: Arc<Cdp>) -> anyhow::Result<Page> {
        let created = cdp
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target = string_field(&created, "targetId", "Target.createTarget")?;
        let attached = cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await?;
        let session = string_field(&attached, "sessionId", "Target.attachToTarget")?;
        let events = cdp.subscribe(
            &session,
            &["Runtime.exceptionThrown", "Runtime.consoleAPICalled"],
        );
        let page = Page {
            cdp,
            session,
            target,
            errors: Mutex::new(Errors {
                events,
                seen: Vec::new(),
            }),
        };
        page.call("Runtime.enable", json!({})).await?;
        page.call("Page.enable", json!({})).await?;
        Ok(page)
    }

    /// Navigates to `url` and waits for its load event.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        // Listening before navigating, so the event cannot come first.
        let mut loaded = self.cdp.subscribe(&self.session, &["Page.loadEventFired"]);
        let answer = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(error) = answer.get("errorText").and_then(Value::as_str) {
            bail!("navigating to {url}: {error}");
        }
        match tokio::time::timeout(LOAD_TIMEOUT, loaded.recv()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => bail!(
                "the browser connection closed while {url} loaded ({})",
                self.cdp.closed_because()
            ),
            Err(_) => bail!("{url} fired no load event within {LOAD_TIMEOUT:?}"),
        }
    }

    /// Evaluates `js` in the page (awaiting a promise it returns) and returns its value as
    /// JSON: `undefined` is null, and what JSON cannot hold (NaN, Infinity, -0, bigints) comes
    /// back as its text. A thrown exception is an error with its text.
    pub async fn eval(&self, js: &str) -> anyhow::Result<Value> {
        self.evaluate(js, COMMAND_TIMEOUT)
            .await?
            .map_err(|thrown| anyhow!("`{}` threw {thrown}", shorten(js, 200)))
    }

    /// Evaluates `predicate` every 100 ms until its value is truthy (not null, false, 0 or
    /// "") and returns that value. A check that throws counts as not yet (the element may not
    /// exist yet). After `timeout`, fails naming `what`, with the last value and the start of
    /// the page's text.
    pub async fn wait_for(
        &self,
        predicate: &str,
        what: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.evaluate(predicate, left.max(MIN_CHECK_TIME)).await {
                Ok(Ok(value)) if truthy(&value) => return Ok(value),
                Ok(Ok(value)) => last = value.to_string(),
                Ok(Err(thrown)) => last = format!("threw {thrown}"),
                // A navigation between two checks leaves no context to evaluate in for a
                // moment; a check that takes too long counts as no answer.
                Err(e) if e.is::<Refusal>() || e.is::<NoAnswer>() => last = format!("{e:#}"),
                Err(e) => return Err(e.context(format!("waiting for {what}"))),
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
        let errors = self.errors();
        let errors = if errors.is_empty() {
            String::new()
        } else {
            format!("\npage errors:\n{}", errors.join("\n"))
        };
        bail!(
            "timed out after {timeout:?} waiting for {what}\nlast value: {last}\npage text:\n{}{errors}",
            self.body_text().await
        )
    }

    /// Clicks the middle of the first element matching `selector` with the mouse, after
    /// scrolling it into view. Fails when nothing matches or another element covers it.
    pub async fn click(&self, selector: &str) -> anyhow::Result<()> {
        let target = self
            .helper(
                "click",
                selector,
                &format!(
                    "(() => {{
                    const el = document.querySelector({selector});
                    if (!el) return null;
                    el.scrollIntoView({{block: 'center', inline: 'center'}});
                    const r = el.getBoundingClientRect();
                    const x = r.left + r.width / 2, y = r.top + r.height / 2;
                    const hit = document.elementFromPoint(x, y);
                    const covered = hit && !el.contains(hit) ? hit.outerHTML.slice(0, 200) : null;
                    return {{x, y, width: r.width, height: r.height, covered}};
                }})()",
                    selector = js_string(selector)
                ),
            )
            .await?;
        if target.is_null() {
            bail!("click {selector:?}: nothing matches it");
        }
        let number = |field| {
            target
                .get(field)
                .and_then(Value::as_f64)
                .ok_or_else(|| anyhow!("click {selector:?}: no {field} in {target}"))
        };
        let (x, y) = (number("x")?, number("y")?);
        if number("width")? <= 0.0 || number("height")? <= 0.0 {
            bail!("click {selector:?}: it is not shown (it has no size)");
        }
        if let Some(covered) = target.get("covered").and_then(Value::as_str) {
            bail!("click {selector:?}: another element covers it: {covered}");
        }
        for (kind, button) in [
            ("mouseMoved", "none"),
            ("mousePressed", "left"),
            ("mouseReleased", "left"),
        ] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": button, "clickCount": 1}),
            )
            .await?;
        }
        Ok(())
    }

    /// Focuses the first field matching `selector`, replaces its value with `text` and
    /// dispatches `input` and `change`, as typing and leaving the field would.
    pub async fn type_into(&self, selector: &str, text: &str) -> anyhow::Result<()> {
        let found = self
            .helper(
                "type_into",
                selector,
                &format!(
                    "(() => {{
                    const el = document.querySelector({selector});
                    if (!el) return false;
                    el.focus();
                    // The prototype's setter, as frameworks that wrap `value` expect.
                    const own = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(el), 'value');
                    if (own && own.set) own.set.call(el, {text}); else el.value = {text};
                    el.dispatchEvent(new Event('input', {{bubbles: true}}));
                    el.dispatchEvent(new Event('change', {{bubbles: true}}));
                    return true;
                }})()",
                    selector = js_string(selector),
                    text = js_string(text)
                ),
            )
            .await?;
        if found != Value::Bool(true) {
            bail!("type_into {selector:?}: nothing matches it");
        }
        Ok(())
    }

    /// Saves a PNG of the viewport at `path`, creating its directory.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        let answer = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let data = string_field(&answer, "data", "Page.captureScreenshot")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .context("Page.captureScreenshot: its data is not base64")?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        tokio::fs::write(path, png)
            .await
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The console errors (`console.error`) and uncaught exceptions seen so far, oldest first.
    pub fn errors(&self) -> Vec<String> {
        let mut errors = lock(&self.errors);
        while let Ok(event) = errors.events.try_recv() {
            if let Some(error) = error_text(&event) {
                errors.seen.push(error);
            }
        }
        errors.seen.clone()
    }

    async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.cdp.call(Some(&self.session), method, params).await
    }

    /// Runs a script of `action` (the helper's own, so a failure names the action and the
    /// selector, not the script).
    async fn helper(&self, action: &str, selector: &str, js: &str) -> anyhow::Result<Value> {
        self.evaluate(js, COMMAND_TIMEOUT)
            .await?
            .map_err(|thrown| anyhow!("{action} {selector:?}: {thrown}"))
    }

    /// Runtime.evaluate: the value, or the text of what the code threw.
    async fn evaluate(&self, js: &str, timeout: Duration) -> anyhow::Result<Result<Value, String>> {
        let params = json!({"expression": js, "returnByValue": true, "awaitPromise": true});
        let answer = self
            .cdp
            .call_within(Some(&self.session), "Runtime.evaluate", params, timeout)
            .await?;
        if let Some(details) = answer.get("exceptionDetails") {
            return Ok(Err(exception_text(details)));
        }
        let result = answer.get("result").unwrap_or(&Value::Null);
        Ok(Ok(
            match (result.get("value"), result.get("unserializableValue")) {
                (Some(value), _) => value.clone(),
                (None, Some(text)) => text.clone(),
                (None, None) => Value::Null,
            },
        ))
    }

    /// The start of the page's text, for failure messages; never fails.
    async fn body_text(&self) -> String {
        let js = "document.body ? document.body.innerText : '(the page has no body)'";
        match self.evaluate(js, MIN_CHECK_TIME * 5).await {
            Ok(Ok(Value::String(text))) => shorten(&text, BODY_TEXT_SHOWN),
            Ok(Ok(other)) => other.to_string(),
            Ok(Err(thrown)) => format!("(reading it threw {thrown})"),
            Err(e) => format!("(could not read it: {e:#})"),
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.cdp
            .send_only("Target.closeTarget", json!({"targetId": self.target}));
    }
}

/// The text of a console error or uncaught exception event; `None` for other console calls.
fn error_text(event: &Event) -> Option<String> {
    match event.method.as_str() {
        "Runtime.exceptionThrown" => Some(exception_text(event.params.get("exceptionDetails")?)),
        "Runtime.consoleAPICalled"
            if event.params.get("type").and_then(Value::as_str) == Some("error") =>
        {
            let args = event.params.get("args").and_then(Value::as_array);
            let words: Vec<String> = args
                .into_iter()
                .flatten()
                .map(|arg| match (arg.get("value"), arg.get("description")) {
                    (Some(Value::String(s)), _) => s.clone(),
                    (Some(value), _) => value.to_string(),
                    (None, Some(Value::String(s))) => s.clone(),
                    _ => arg.get("type").map_or_else(String::new, Value::to_string),
                })
                .collect();
            Some(format!("console.error: {}", words.join(" ")))
        }
        _ => None,
    }
}

/// An `exceptionDetails`' text: "Uncaught" and the exception's description (its message and
/// stack) when there is one.
fn exception_text(details: &Value) -> String {
    let text = details
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or("exception");
    match details
        .get("exception")
        .and_then(|e| e.get("description"))
        .and_then(Value::as_str)
    {
        // A rejection's text already holds the description's first line.
        Some(description) => match description.lines().next() {
            Some(first) if text.ends_with(first) => {
                format!("{text}{}", &description[first.len()..])
            }
            _ => format!("{text} {description}"),
        },
        None => text.to_string(),
    }
}

/// JavaScript's truthiness for what JSON can hold.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `s` as a JavaScript string literal (JSON's is one).
fn js_string(s: &str) -> String {
    Value::from(s).to_string()
}

/// The first `max` characters of `s`, marked when cut.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_is_javascripts() {
        for (value, expected) in [
            (json!(null), false),
            (json!(false), false),
            (json!(0), false),
            (json!(0.0), false),
            (json!(""), false),
            (json!(true), true),
            (json!(-1), true),
            (json!("0"), true),
            (json!([]), true),
            (json!({}), true),
        ] {
            assert_eq!(truthy(&value), expected, "{value}");
        }
    }

    #[test]
    fn console_errors_and_exceptions_become_text() {
        let event = |method: &str, params: Value| Event {
            method: method.to_string(),
            params,
        };
        let cases = [
            (
                event(
                    "Runtime.consoleAPICalled",
                    json!({"type": "error", "args": [
                        {"type": "string", "value": "failed:"},
                        {"type": "number", "value": 3},
                        {"type": "object", "description": "Error: x"},
                    ]}),
                ),
                Some("console.error: failed: 3 Error: x"),
            ),
            (
                event(
                    "Runtime.consoleAPICalled",
                    json!({"type": "log", "args": [{"type": "string", "value": "hi"}]}),
                ),
                None,
            ),
            (
                event(
                    "Runtime.exceptionThrown",
                    json!({"exceptionDetails": {"text": "Uncaught", "exception": {"description": "Error: boom"}}}),
                ),
                Some("Uncaught Error: boom"),
            ),
            (
                event(
                    "Runtime.exceptionThrown",
                    json!({"exceptionDetails": {"text": "Uncaught SyntaxError"}}),
                ),
                Some("Uncaught SyntaxError"),
            ),
            (
                event(
                    "Runtime.exceptionThrown",
                    json!({"exceptionDetails": {"text": "Uncaught (in promise) Error: no", "exception": {"description": "Error: no\n    at f"}}}),
                ),
                Some("Uncaught (in promise) Error: no\n    at f"),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(error_text(&event).as_deref(), expected, "{}", event.params);
        }
    }

    #[test]
    fn shortening_counts_characters_and_marks_the_cut() {
        assert_eq!(shorten("héllo", 2), "hé…");
        assert_eq!(shorten("hé", 2), "hé");
    }
}
