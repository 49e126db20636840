//! Support for the real-browser suite (tests/browser.rs): finding Debian's Chromium and
//! chromedriver, running chromedriver on a free port, one WebDriver session per user (each
//! with its own fresh profile, so two users never share cookies or storage), and small
//! helpers that poll the page for a condition until a deadline — never a fixed sleep.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// How often a wait looks at the page again.
const POLL_EVERY: Duration = Duration::from_millis(15);
/// How long a plain UI step (a click, a page load) may take.
pub const STEP: Duration = Duration::from_secs(10);

/// The Chromium flags this environment needs (see issue 4), plus a fixed window size so the
/// screenshots are comparable.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
];

/// The two programs the suite needs; `CHROMIUM` and `CHROMEDRIVER` override the paths.
pub struct Programs {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

impl Programs {
    /// Both programs, or a sentence naming what is missing.
    pub fn find() -> Result<Self, String> {
        let path = |var: &str, default: &str| {
            PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()))
        };
        let programs = Self {
            chromium: path("CHROMIUM", "/usr/bin/chromium"),
            chromedriver: path("CHROMEDRIVER", "/usr/bin/chromedriver"),
        };
        let missing: Vec<String> = [&programs.chromium, &programs.chromedriver]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            Ok(programs)
        } else {
            Err(format!("not found: {}", missing.join(", ")))
        }
    }
}

impl Programs {
    /// Both programs; or, if one is missing, `None` after a loud notice on stderr — except in
    /// CI (`CI=true`), where the browser suite is mandatory and this panics instead.
    pub fn or_skip() -> Option<Self> {
        let why = match Self::find() {
            Ok(programs) => return Some(programs),
            Err(why) => why,
        };
        let install = "apt-get install -y chromium chromium-driver";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "the browser suite is mandatory in CI, but chromium/chromedriver is missing ({why}): {install}"
            );
        }
        let notice = format!(
            "SKIPPED browser suite: chromium/chromedriver not installed ({why}) — {install}"
        );
        let bar = "!".repeat(notice.chars().count().min(100));
        // Straight to the process's stderr: libtest would swallow an eprintln! of a passing test.
        let _ = writeln!(std::io::stderr(), "\n{bar}\n{notice}\n{bar}\n");
        None
    }
}

/// The browser tests of one binary run one at a time: two pairs of Chromiums at once on a
/// small machine would blur the timings each test asserts (a message "within 1 s").
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the machine's browsers for one test until dropped (a panicking test releases it too).
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

/// A chromedriver process on a free local port; killed when dropped.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Driver {
    pub fn spawn(chromedriver: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let mut driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + STEP;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within {STEP:?}"
            );
            std::thread::sleep(POLL_EVERY);
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One user's browser: its own WebDriver session and Chromium profile.
pub struct Browser {
    pub client: Client,
    pub name: &'static str,
    base: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn open(driver: &Driver, chromium: &Path, base: &str, name: &'static str) -> Self {
        let profile = tempfile::Builder::new()
            .prefix("chatroom-chromium-")
            .tempdir()
            .expect("profile dir");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "browserName": "chrome",
            // Leave an alert open (instead of dismissing it) so the suite can see it.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": { "binary": chromium.display().to_string(), "args": args },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("[{name}] cannot start a Chromium session: {e}"));
        Self {
            client,
            name,
            base: base.trim_end_matches('/').to_owned(),
            _profile: profile,
        }
    }

    /// The server's origin this browser talks to, e.g. `http://127.0.0.1:4321`.
    pub fn origin(&self) -> &str {
        &self.base
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }

    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("[{}] goto {url}: {e}", self.name));
    }

    /// The page's path and query, e.g. `/home` or `/home?room=x`.
    pub async fn location(&self) -> String {
        let url = self
            .client
            .current_url()
            .await
            .unwrap_or_else(|e| panic!("[{}] current url: {e}", self.name));
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.try_js(script, args)
            .await
            .unwrap_or_else(|e| panic!("[{}] script failed: {e}\n{script}", self.name))
    }

    pub async fn try_js(&self, script: &str, args: Vec<Value>) -> Result<Value, CmdError> {
        self.client.execute(script, args).await
    }

    /// Runs an async script: `done` is bound to the completion callback.
    pub async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        let script = format!("const done = arguments[arguments.length - 1];\n{script}");
        self.client
            .execute_async(&script, args)
            .await
            .unwrap_or_else(|e| panic!("[{}] async script failed: {e}\n{script}", self.name))
    }

    /// Polls `script` until it returns something truthy, which it returns, or panics with
    /// `what` (and the last value seen) after `timeout`.
    pub async fn wait_js(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        args: Vec<Value>,
    ) -> Value {
        let mut last = Value::Null;
        let outcome = poll(timeout, async || {
            match self.try_js(script, args.clone()).await {
                Ok(v) if truthy(&v) => Some(Ok(v)),
                Ok(v) => {
                    last = v;
                    None
                }
                Err(e) if e.is_javascript_error() || e.is_stale_element_reference() => {
                    // e.g. the page is navigating: look again
                    last = Value::String(e.to_string());
                    None
                }
                Err(e) => Some(Err(e)),
            }
        })
        .await;
        match outcome {
            Some(Ok(v)) => v,
            Some(Err(e)) => panic!("[{}] while waiting until {what}: {e}", self.name),
            None => panic!(
                "[{}] timed out after {timeout:?} waiting until {what} (last seen: {last})",
                self.name
            ),
        }
    }

    /// Waits until the page is at `path` and its document has loaded.
    pub async fn wait_at(&self, path: &str) {
        let mut last = String::new();
        let arrived = poll(STEP, async || {
            last = self.location().await;
            if last != path {
                return None;
            }
            let ready = self
                .try_js("return document.readyState === 'complete'", vec![])
                .await;
            matches!(ready, Ok(Value::Bool(true))).then_some(())
        })
        .await;
        assert!(
            arrived.is_some(),
            "[{}] expected to reach {path}, still at {last}",
            self.name
        );
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(STEP)
            .every(POLL_EVERY)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("[{}] no element {css}: {e}", self.name))
    }

    /// A real click (WebDriver moves the pointer and clicks), once the element is shown.
    pub async fn click(&self, css: &str) {
        self.wait_js(
            &format!("{css} is visible"),
            STEP,
            VISIBLE,
            vec![json!(css)],
        )
        .await;
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("[{}] click {css}: {e}", self.name));
    }

    /// Types `text` as key presses into the element (which gets the focus).
    pub async fn type_into(&self, css: &str, text: &str) {
        self.find(css)
            .await
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("[{}] type into {css}: {e}", self.name));
    }

    /// Types `text` as key presses into whatever has the focus now, as a user at the keyboard
    /// would (nothing is focused first).
    pub async fn type_here(&self, text: &str) {
        let focused = self
            .client
            .active_element()
            .await
            .unwrap_or_else(|e| panic!("[{}] the focused element: {e}", self.name));
        focused
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("[{}] type into the focused element: {e}", self.name));
    }

    pub async fn clear(&self, css: &str) {
        self.find(css)
            .await
            .clear()
            .await
            .unwrap_or_else(|e| panic!("[{}] clear {css}: {e}", self.name));
    }

    pub async fn text(&self, css: &str) -> String {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
                vec![json!(css)],
            )
            .await;
        v.as_str()
            .unwrap_or_else(|| panic!("[{}] no element {css}", self.name))
            .to_owned()
    }

    pub async fn is_visible(&self, css: &str) -> bool {
        self.js(VISIBLE, vec![json!(css)]).await == Value::Bool(true)
    }

    /// Resizes the window so that the page's viewport is `width`×`height` CSS pixels (e.g. a
    /// phone's 390×844; the window's own frame is added on top) and returns the page's
    /// `[innerWidth, innerHeight]` once it has taken the new size.
    pub async fn resize(&self, width: u32, height: u32) -> Value {
        let frame = self
            .js(
                "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]",
                vec![],
            )
            .await;
        let frame = |i: usize| {
            frame[i]
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0)
        };
        let (outer_width, outer_height) = (width + frame(0), height + frame(1));
        self.client
            .set_window_size(outer_width, outer_height)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "[{}] set window size {outer_width}×{outer_height}: {e}",
                    self.name
                )
            });
        self.wait_js(
            &format!("the page's viewport is {width}×{height}"),
            STEP,
            "return window.innerWidth === arguments[0] && window.innerHeight === arguments[1]
                && [window.innerWidth, window.innerHeight]",
            vec![json!(width), json!(height)],
        )
        .await
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, file: &Path) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("[{}] screenshot: {e}", self.name));
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).expect("artifacts dir");
        }
        std::fs::write(file, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
    }
}

/// Script: is the element `arguments[0]` rendered (not `hidden`, not display:none)?
pub const VISIBLE: &str = "const e = document.querySelector(arguments[0]);
    return !!e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';";

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Calls `check` until it gives `Some`, at most until `timeout` has passed (then `None`).
pub async fn poll<T>(timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
