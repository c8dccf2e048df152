//! A small W3C WebDriver client for the browser test: headless Chromium driven by Debian's
//! `chromedriver` on a loopback port. The protocol is HTTP+JSON; this speaks HTTP/1.1 with
//! one connection per command, which is all a local driver needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use kdfed_testbed::Daemon;
use serde_json::{Value, json};

use super::{TIMEOUT, free_port};

/// The Chromium binary and its driver (Debian's `chromium` and `chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's `chromium-driver`.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Fails (never skips) when Chromium or its driver is missing: `scripts/test.sh` installs
/// both, so a missing one is a broken machine, not a reason to pass.
pub fn require_browser() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the browser test needs Debian's {package} \
             (apt-get install chromium chromium-driver; scripts/test.sh installs them)"
        );
    }
}

/// A chromedriver process and one browser session.
pub struct Browser {
    driver: Daemon,
    port: u16,
    session: String,
    /// Where screenshots are written.
    pub artifacts: PathBuf,
    shots: std::sync::atomic::AtomicUsize,
}

/// An element of the current page (its WebDriver reference).
#[derive(Clone, Debug)]
pub struct Element(String);

/// A WebDriver error answer: its `error` code and message.
#[derive(Debug)]
pub struct DriverError {
    /// W3C error code (`no such element`, `stale element reference`, ...).
    pub error: String,
    /// The driver's message.
    pub message: String,
}

impl Browser {
    /// Starts chromedriver (logging into `log_dir`) and a headless Chromium session that
    /// writes its screenshots to `artifacts`.
    pub async fn start(log_dir: &Path, artifacts: PathBuf) -> Browser {
        require_browser();
        std::fs::create_dir_all(&artifacts).expect("artifacts folder");
        let port = free_port();
        let args = vec![format!("--port={port}"), "--allowed-ips=127.0.0.1".to_string()];
        let driver =
            Daemon::start("chromedriver", Path::new(CHROMEDRIVER), &args, log_dir).expect("start chromedriver");
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Ok((200, status)) = call(port, "GET", "/status", None).await
                && status["value"]["ready"] == json!(true)
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "chromedriver did not become ready on port {port}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900"]
            }
        }}});
        let (code, answer) = call(port, "POST", "/session", Some(capabilities)).await.expect("new session");
        assert_eq!(code, 200, "chromedriver refused a session: {answer}");
        let session = answer["value"]["sessionId"].as_str().expect("sessionId").to_string();
        Browser { driver, port, session, artifacts, shots: Default::default() }
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, DriverError> {
        let path = format!("/session/{}{path}", self.session);
        let (code, answer) = call(self.port, method, &path, body)
            .await
            .map_err(|e| DriverError { error: "transport".into(), message: format!("{method} {path}: {e}") })?;
        if code == 200 {
            return Ok(answer["value"].clone());
        }
        Err(DriverError {
            error: answer["value"]["error"].as_str().unwrap_or("unknown").to_string(),
            message: answer["value"]["message"].as_str().unwrap_or_default().to_string(),
        })
    }

    async fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.command(method, path, body).await.unwrap_or_else(|e| panic!("{method} {path}: {}: {}", e.error, e.message))
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// The address of the current page.
    pub async fn url(&self) -> String {
        self.must("GET", "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching a CSS selector, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        let found = self.command("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await;
        match found {
            Ok(value) => {
                value.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).map(|id| Element(id.into()))
            }
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("find {css}: {}: {}", e.error, e.message),
        }
    }

    /// The element matching `css`, waiting for it (generously) to appear.
    pub async fn element(&self, css: &str) -> Element {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(tokio::time::Instant::now() < deadline, "no element {css} on {}", self.url().await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Types `text` into an element (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.must("POST", &format!("/element/{}/clear", e.0), Some(json!({}))).await;
        self.must("POST", &format!("/element/{}/value", e.0), Some(json!({"text": text}))).await;
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.must("POST", &format!("/element/{}/click", e.0), Some(json!({}))).await;
    }

    /// Chooses the `<option>` with `value` in the `<select>` matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]")).await;
    }

    /// The rendered text of an element; `Err` when the element is gone (a new page).
    pub async fn text_of(&self, e: &Element) -> Result<String, DriverError> {
        self.command("GET", &format!("/element/{}/text", e.0), None)
            .await
            .map(|v| v.as_str().unwrap_or_default().to_string())
    }

    /// The rendered text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let e = self.element(css).await;
        self.text_of(&e).await.unwrap_or_else(|e| panic!("text of {css}: {}: {}", e.error, e.message))
    }

    /// The whole page's rendered text.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// The current page's HTML as the browser holds it now (after scripts changed it).
    pub async fn source(&self) -> String {
        self.must("GET", "/source", None).await.as_str().unwrap_or_default().to_string()
    }

    /// Waits (generously, polling) until the text of the element matching `css` satisfies
    /// `ok`; returns it.
    pub async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(e) = self.find(css).await
                && let Ok(text) = self.text_of(&e).await
                && ok(&text)
            {
                return text;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.screenshot("timeout").await;
                panic!("{what}: {css} never satisfied the check on {}:\n{}", self.url().await, self.page_text().await);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Scrolls the element matching `css` to the middle of the window (for screenshots).
    pub async fn scroll_to(&self, css: &str) {
        let script = "document.querySelector(arguments[0]).scrollIntoView({block: 'center'});";
        self.must("POST", "/execute/sync", Some(json!({"script": script, "args": [css]}))).await;
    }

    /// Writes a PNG of the window to the artifacts folder as `NN-name.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.must("GET", "/screenshot", None).await;
        let png =
            base64::engine::general_purpose::STANDARD.decode(data.as_str().unwrap_or_default()).expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        let n = self.shots.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let path = self.artifacts.join(format!("{n:02}-{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Ends the session and the driver.
    pub async fn quit(mut self) {
        let _ = self.command("DELETE", "", None).await;
        self.driver.kill();
    }
}

/// One WebDriver command: `(status, JSON answer)`. chromedriver keeps the connection open
/// after its answer even when asked to close it, so the body is read by its length.
async fn call(port: u16, method: &str, path: &str, body: Option<Value>) -> std::io::Result<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = stream.read(&mut chunk).await?;
        raw.extend_from_slice(&chunk[..n]);
        if let Some((status, value)) = answer(&raw) {
            return Ok((status, value));
        }
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "incomplete answer"));
        }
    }
}

/// The status and JSON body of `raw` once it holds a whole HTTP/1.1 answer.
fn answer(raw: &[u8]) -> Option<(u16, Value)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let rest = &raw[split + 4..];
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
    let body = match length {
        Some(length) if rest.len() >= length => rest[..length].to_vec(),
        Some(_) => return None,
        None if head.contains("transfer-encoding: chunked") => unchunk(rest)?,
        None => return None,
    };
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// The body of a chunked HTTP/1.1 answer, once its last chunk has arrived.
fn unchunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = String::from_utf8_lossy(&raw[..end]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        if raw.len() < end + 4 + size {
            return None;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 4 + size..];
    }
}
