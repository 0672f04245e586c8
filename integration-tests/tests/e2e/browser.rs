//! The browser harness itself (`portico_integration_tests::browser`) on a tiny page served
//! here: load, wait, type, click, console errors, uncaught exceptions and a screenshot, as the
//! dashboard tests will use them.

use std::net::SocketAddr;
use std::time::Duration;

use portico_integration_tests::browser::{Browser, artifacts_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long the page may take to show a change: a 200 ms timer, with room for a slow machine.
const SHOW_TIMEOUT: Duration = Duration::from_secs(10);

/// A button whose click, 200 ms later, shows the name typed in the field; a console error
/// and an uncaught exception on load.
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>smoke</title></head>
<body>
<p id="status">ready</p>
<input id="name">
<button id="go">Go</button>
<script>
console.error("smoke: deliberate console error", 42);
setTimeout(() => { throw new Error("smoke: deliberate uncaught error"); }, 0);
document.getElementById("go").addEventListener("click", () => {
  const name = document.getElementById("name").value;
  setTimeout(() => { document.getElementById("status").textContent = "hello " + name; }, 200);
});
</script>
</body>
</html>
"#;

/// Serves [`PAGE`] at `/` (404 elsewhere), one connection per request, until the test ends.
async fn serve_page() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream));
        }
    });
    addr
}

async fn answer(mut stream: TcpStream) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let (status, body) = if request.starts_with(b"GET / ") {
        ("200 OK", PAGE)
    } else {
        ("404 Not Found", "not found")
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}

#[tokio::test]
async fn a_page_is_loaded_typed_into_clicked_and_photographed() {
    let addr = serve_page().await;
    let browser = Browser::launch().await.unwrap();
    let page = browser.new_page().await.unwrap();
    page.goto(&format!("http://{addr}/")).await.unwrap();

    let status = "document.querySelector('#status').textContent";
    let ready = page
        .wait_for(
            &format!("{status} === 'ready' && {status}"),
            "the page",
            SHOW_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(ready, "ready");

    page.type_into("#name", "portico").await.unwrap();
    page.click("#go").await.unwrap();
    let shown = page
        .wait_for(
            &format!("{status}.startsWith('hello') && {status}"),
            "the greeting after the click",
            SHOW_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(shown, "hello portico");

    let errors = page.errors();
    assert!(
        errors
            .iter()
            .any(|e| e == "console.error: smoke: deliberate console error 42"),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Error: smoke: deliberate uncaught error")),
        "{errors:#?}"
    );

    // What a test sees when the page throws, is missing an element, or never gets there.
    let thrown = page.eval("null.x").await.unwrap_err().to_string();
    assert!(thrown.contains("TypeError"), "{thrown}");
    let missing = page.click("#nowhere").await.unwrap_err().to_string();
    assert!(
        missing.contains("click \"#nowhere\": nothing matches"),
        "{missing}"
    );
    let timeout = page
        .wait_for(
            "document.title === 'never'",
            "a title never set",
            Duration::from_millis(300),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        timeout.contains("waiting for a title never set")
            && timeout.contains("last value: false")
            && timeout.contains("hello portico"),
        "{timeout}"
    );

    let shot = artifacts_dir().join("browser").join("smoke.png");
    page.screenshot(&shot).await.unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        shot.display()
    );
}
